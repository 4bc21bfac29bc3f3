/**
 * FUSE protocol logic without a kernel: INIT negotiation against kernels older and newer than the
 * version flashcsi speaks, the layouts' sizes, and the errno map covering every engine code.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode } from '../../src/engine/errors.js';
import { ERRNO_BY_CODE } from '../../src/fuse/errno.js';
import { answerInit } from '../../src/fuse/worker.js';
import { Attr, AttrOut, EntryOut, Errno, InitFlag, InitIn, InitOut, KERNEL_MINOR_VERSION } from '../../src/fuse/wire.js';

function init(major: number, minor: number, flags: number, maxReadahead = 131072): { errno: number; out: Buffer } {
  const inBuf = Buffer.alloc(InitIn.size);
  inBuf.writeUInt32LE(major, InitIn.major);
  inBuf.writeUInt32LE(minor, InitIn.minor);
  inBuf.writeUInt32LE(maxReadahead, InitIn.maxReadahead);
  inBuf.writeUInt32LE(flags >>> 0, InitIn.flags);
  const out = Buffer.alloc(InitOut.size, 0xff);
  return { errno: answerInit(inBuf, out), out };
}

const ALL = InitFlag.AsyncRead | InitFlag.BigWrites | InitFlag.AsyncDio | InitFlag.MaxPages;

describe('FUSE INIT negotiation', () => {
  test('a newer kernel (7.44, every flag offered): 7.31, only the flags flashcsi wants, 1 MiB writes', () => {
    const { errno, out } = init(7, 44, 0xffffffff);
    assert.equal(errno, 0);
    assert.equal(out.readUInt32LE(InitOut.major), 7);
    assert.equal(out.readUInt32LE(InitOut.minor), KERNEL_MINOR_VERSION);
    assert.equal(out.readUInt32LE(InitOut.flags), ALL);
    assert.equal(out.readUInt32LE(InitOut.maxWrite), 1 << 20);
    assert.equal(out.readUInt16LE(InitOut.maxPages), 256);
    assert.equal(out.readUInt32LE(InitOut.maxReadahead), 131072);
    assert.ok(out.readUInt16LE(InitOut.maxBackground) > 12, 'max_background raised above the kernel default (12)');
    assert.ok(out.subarray(36).equals(Buffer.alloc(InitOut.size - 36)), 'unused fields zeroed');
  });

  test('an older kernel (7.26, no MAX_PAGES): its minor, and no flag it did not offer', () => {
    const { errno, out } = init(7, 26, InitFlag.AsyncRead | InitFlag.BigWrites | InitFlag.AsyncDio);
    assert.equal(errno, 0);
    assert.equal(out.readUInt32LE(InitOut.minor), 26);
    assert.equal(out.readUInt32LE(InitOut.flags), InitFlag.AsyncRead | InitFlag.BigWrites | InitFlag.AsyncDio);
  });

  test('a kernel below 7.23 or with major 6 is refused; one with major 8 is told 7.31 and asks again', () => {
    assert.equal(init(7, 19, ALL).errno, Errno.EPROTO);
    assert.equal(init(6, 40, ALL).errno, Errno.EPROTO);
    const newer = init(8, 0, ALL);
    assert.equal(newer.errno, 0);
    assert.equal(newer.out.readUInt32LE(InitOut.major), 7);
    assert.equal(newer.out.readUInt32LE(InitOut.minor), KERNEL_MINOR_VERSION);
  });
});

describe('FUSE layouts and errnos', () => {
  test('struct sizes as in <linux/fuse.h>', () => {
    assert.equal(Attr.size, 88);
    assert.equal(EntryOut.size, 128);
    assert.equal(AttrOut.size, 104);
    assert.equal(EntryOut.attr + Attr.size, EntryOut.size);
    assert.equal(AttrOut.attr + Attr.size, AttrOut.size);
  });

  test('every engine error code has an errno', () => {
    for (const code of Object.values(ErrorCode)) assert.equal(typeof ERRNO_BY_CODE[code], 'number', code);
    assert.equal(ERRNO_BY_CODE.READ_ONLY, Errno.EROFS);
    assert.equal(ERRNO_BY_CODE.NO_SPACE, Errno.ENOSPC);
  });
});
