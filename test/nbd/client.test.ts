/**
 * The client side of the handshake (src/nbd/client.ts), which negotiates the sockets handed to the
 * kernel: against the real server, against a server that refuses, one that is not NBD, one that
 * never answers, and after the handshake the socket must carry the transmission phase untouched
 * (the kernel reads from it next, so not one byte may have been consumed or be pending).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { connectAndNegotiate, handOver, NbdClientError } from '../../src/nbd/client.js';
import { TransmissionFlag } from '../../src/nbd/protocol.js';
import { type Fixture, MiB, startServer, tempDir } from './helpers/fixture.js';
import { CMD } from './helpers/raw-client.js';

/** A unix-socket server that runs `onConnection` for each client (a misbehaving NBD server). */
async function fakeServer(onConnection: (s: net.Socket) => void): Promise<{ path: string; close: () => Promise<void> }> {
  const dir = await tempDir('flashcsi-client-');
  const sock = path.join(dir, 'fake.sock');
  const server = net.createServer(onConnection);
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  return {
    path: sock,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

const rejectsWith = (code: NbdClientError['code']) => (err: unknown) => err instanceof NbdClientError && err.code === code;

describe('NBD client handshake (what the kernel path hands over)', { timeout: 60_000 }, () => {
  let fx: Fixture;
  before(async () => {
    fx = await startServer({ size: 8 * MiB });
  });
  after(() => fx.close());

  it('negotiates the default export as nbd-client does and reports its size and flags', async () => {
    const n = await connectAndNegotiate({ path: fx.sock }, '');
    try {
      assert.equal(n.size, BigInt(8 * MiB));
      for (const f of [TransmissionFlag.HasFlags, TransmissionFlag.SendFlush, TransmissionFlag.SendFua, TransmissionFlag.SendTrim, TransmissionFlag.CanMultiConn]) {
        assert.ok((n.flags & f) !== 0, `flag ${f} missing from ${n.flags.toString(16)}`);
      }
      assert.equal(n.flags & TransmissionFlag.SendDf, 0, 'DF must be clear without structured replies');
    } finally {
      n.socket.destroy();
    }
  });

  it('leaves the socket at the start of the transmission phase (simple replies only)', async () => {
    const n = await connectAndNegotiate({ path: fx.sock }, '');
    // What the kernel does: take its own reference to the socket (here a dup of the descriptor),
    // after which ours is closed; then speak the transmission phase on it.
    const dup = createRequire(import.meta.url)('koffi').load('libc.so.6').func('int dup(int fd)') as (fd: number) => number;
    const fd = dup(handOver(n.socket));
    assert.ok(fd >= 0);
    n.socket.destroy();
    const raw = new net.Socket({ fd, readable: true, writable: true });
    try {
      const req = Buffer.alloc(28);
      req.writeUInt32BE(0x25609513, 0);
      req.writeUInt16BE(CMD.flush, 6);
      req.writeBigUInt64BE(0x1234n, 8);
      raw.write(req);
      const reply = await new Promise<Buffer>((resolve) => raw.once('data', resolve));
      assert.equal(reply.length, 16, 'a simple reply and nothing before it');
      assert.equal(reply.readUInt32BE(0), 0x67446698);
      assert.equal(reply.readUInt32BE(4), 0);
      assert.equal(reply.readBigUInt64BE(8), 0x1234n);
    } finally {
      raw.destroy();
    }
  });

  it('reports an unknown export as REFUSED with the server message', async () => {
    await assert.rejects(connectAndNegotiate({ path: fx.sock }, 'no-such-export'), (err: unknown) => rejectsWith('REFUSED')(err) && /no-such-export/.test((err as Error).message));
  });

  it('reports a server that is not NBD as PROTOCOL_ERROR, one that does not answer as TIMEOUT, none as UNREACHABLE', async () => {
    const http = await fakeServer((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
    const mute = await fakeServer(() => undefined);
    try {
      await assert.rejects(connectAndNegotiate({ path: http.path }, ''), rejectsWith('PROTOCOL_ERROR'));
      await assert.rejects(connectAndNegotiate({ path: mute.path }, '', 200), rejectsWith('TIMEOUT'));
      await assert.rejects(connectAndNegotiate({ path: `${http.path}.absent` }, ''), rejectsWith('UNREACHABLE'));
    } finally {
      await http.close();
      await mute.close();
    }
  });
});
