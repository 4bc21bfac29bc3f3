/**
 * Attach a volume's data-path server as a local block device, the way the CSI node plugin does:
 * through the kernel's nbd driver where it is loaded (kernel-nbd.ts), else through a FUSE file and a
 * loop device, the file served by the volume's serve process itself (serve-fuse.ts) or by nbdfuse
 * (nbdfuse.ts). `detachRecord` and `attachmentProblems` work from the JSON-serialisable
 * AttachmentRecord alone, so a restarted plugin can check on or tear down what an earlier one made.
 *
 * No sleeps: readiness and teardown wait on real conditions (pid file, sysfs, process exit) with
 * deadlines.
 */
import { promises as fsp } from 'node:fs';
import { DEFAULT_ATTACH_TIMEOUT_MS, type AttachMethod, type AttachOptions, type AttachPreference, type Attachment, type AttachmentRecord } from './attachment.js';
import { blockDeviceSize } from './block.js';
import { attachKernel, detachKernel, hasKernelNbd, kernelAttachmentProblems } from './kernel-nbd.js';
import { setLoopSizeLimit } from './loop.js';
import { attachNbdfuse, detachNbdfuse, nbdfuseAttachmentProblems } from './nbdfuse.js';
import { attachServeFuse, detachServeFuse, serveFuseAttachmentProblems } from './serve-fuse.js';

/** The method `attach()` uses for a preference: `auto` is the kernel where its nbd module is loaded, else serve-fuse. */
export async function chooseAttachMethod(preference: AttachPreference = 'auto', devDir = '/dev'): Promise<AttachMethod> {
  if (preference !== 'auto') return preference;
  return (await hasKernelNbd(devDir)) ? 'kernel' : 'serve-fuse';
}

interface MethodOps {
  attach(opts: AttachOptions): Promise<Attachment>;
  detach(record: AttachmentRecord, timeoutMs: number): Promise<void>;
  problems(record: AttachmentRecord): Promise<string[]>;
}

const METHODS: Record<AttachMethod, MethodOps> = {
  kernel: { attach: attachKernel, detach: (record, timeoutMs) => detachKernel(record.device, timeoutMs), problems: (record) => kernelAttachmentProblems(record.device, record.identifier) },
  'serve-fuse': { attach: attachServeFuse, detach: detachServeFuse, problems: serveFuseAttachmentProblems },
  nbdfuse: { attach: attachNbdfuse, detach: detachNbdfuse, problems: nbdfuseAttachmentProblems },
};

/** Attaches with the method the preference picks. */
export async function attach(opts: AttachOptions, preference: AttachPreference = 'auto'): Promise<Attachment> {
  return METHODS[await chooseAttachMethod(preference)].attach(opts);
}

/**
 * Tears down what a record describes, skipping steps already done, so it works after a crash at
 * any point and from a process that did not attach. Refuses (BUSY) while the device is mounted.
 */
export async function detachRecord(record: AttachmentRecord, timeoutMs = DEFAULT_ATTACH_TIMEOUT_MS): Promise<void> {
  await METHODS[record.method].detach(record, timeoutMs);
}

/**
 * What is wrong with an attachment, as human-readable problems; empty when it looks healthy (the
 * FUSE file's process alive and mounted, the loop device bound to its file; or the nbd device
 * attached to its volume's backend, connected or waiting for a reconnect).
 */
export async function attachmentProblems(record: AttachmentRecord): Promise<string[]> {
  return METHODS[record.method].problems(record);
}

/** How the node stager attaches volumes: `nbdAttacher` for real, something else in pure-logic tests. */
export interface Attacher {
  method(): Promise<AttachMethod>;
  attach(opts: AttachOptions): Promise<Attachment>;
  detach(record: AttachmentRecord): Promise<void>;
  problems(record: AttachmentRecord): Promise<string[]>;
  /** Makes the attached device show `size` bytes; false when the method cannot (kernel nbd). */
  grow(record: AttachmentRecord, size: number): Promise<boolean>;
}

/** The real attacher, with the method `preference` picks (`flashcsi plugin --attach`). */
export function nbdAttacher(preference: AttachPreference = 'auto'): Attacher {
  return {
    method: () => chooseAttachMethod(preference),
    attach: (opts) => attach(opts, preference),
    detach: (record) => detachRecord(record),
    problems: attachmentProblems,
    async grow(record, size) {
      if (record.method === 'kernel') return (await blockDeviceSize(record.device)) >= size;
      // A FUSE file's size is its inode's, which the kernel refreshes only on a getattr; the loop
      // device takes the smaller of that and its size limit, so ask first (serve-fuse answers
      // getattr uncached; nbdfuse's `.attach` export is larger than any volume anyway).
      if (record.fuse !== undefined) await fsp.stat(record.fuse.file);
      setLoopSizeLimit(record.device, size);
      return true;
    },
  };
}
