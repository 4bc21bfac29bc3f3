/**
 * Attach an NBD export as a local block device, the way the CSI node plugin does: through the
 * kernel's nbd driver where it is loaded (kernel-nbd.ts), else through nbdfuse and a loop device
 * (nbdfuse.ts). `detachRecord` and `attachmentProblems` work from the JSON-serialisable
 * AttachmentRecord alone, so a restarted plugin can check on or tear down what an earlier one made.
 *
 * No sleeps: readiness and teardown wait on real conditions (pid file, sysfs, process exit) with
 * deadlines.
 */
import { DEFAULT_ATTACH_TIMEOUT_MS, type AttachMethod, type AttachOptions, type Attachment, type AttachmentRecord } from './attachment.js';
import { blockDeviceSize } from './block.js';
import { attachKernel, detachKernel, hasKernelNbd, kernelAttachmentProblems } from './kernel-nbd.js';
import { setLoopSizeLimit } from './loop.js';
import { attachNbdfuse, detachNbdfuse, nbdfuseAttachmentProblems } from './nbdfuse.js';

/** The method `attach()` will use. */
export async function chooseAttachMethod(devDir = '/dev'): Promise<AttachMethod> {
  return (await hasKernelNbd(devDir)) ? 'kernel' : 'nbdfuse';
}

/** Attaches with the kernel client if available, else nbdfuse + loop. */
export async function attach(opts: AttachOptions): Promise<Attachment> {
  return (await chooseAttachMethod()) === 'kernel' ? attachKernel(opts) : attachNbdfuse(opts);
}

/**
 * Tears down what a record describes, skipping steps already done, so it works after a crash at
 * any point and from a process that did not attach. Refuses (BUSY) while the device is mounted.
 */
export async function detachRecord(record: AttachmentRecord, timeoutMs = DEFAULT_ATTACH_TIMEOUT_MS): Promise<void> {
  if (record.method === 'kernel') await detachKernel(record.device, timeoutMs);
  else await detachNbdfuse(record, timeoutMs);
}

/**
 * What is wrong with an attachment, as human-readable problems; empty when it looks healthy
 * (nbdfuse alive and mounted, the loop device bound to its file; or the nbd device attached to its
 * volume's backend, connected or waiting for a reconnect).
 */
export async function attachmentProblems(record: AttachmentRecord): Promise<string[]> {
  return record.method === 'kernel' ? kernelAttachmentProblems(record.device, record.identifier) : nbdfuseAttachmentProblems(record);
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

export const nbdAttacher: Attacher = {
  method: () => chooseAttachMethod(),
  attach,
  detach: (record) => detachRecord(record),
  problems: attachmentProblems,
  async grow(record, size) {
    if (record.method === 'kernel') return (await blockDeviceSize(record.device)) >= size;
    setLoopSizeLimit(record.device, size);
    return true;
  },
};
