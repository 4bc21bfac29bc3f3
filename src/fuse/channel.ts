/**
 * What the main thread and the worker threads of the FUSE export share: the file system's shape,
 * the messages between them, and writing a reply to /dev/fuse (either side replies).
 */
import * as fs from 'node:fs';
import type { FastPathHandle } from '../engine/fast-path.js';
import type { FuseStatsHandle } from './stats.js';
import type { Op } from './wire.js';

/** The largest READ or WRITE the kernel may send (init_out.max_write; max_pages covers READ). */
export const MAX_IO = 1 << 20;
/** Node id of the one file, `disk`. */
export const DISK_ID = 2;
export const DISK_NAME = 'disk';

/** What the main thread hands each worker (structured-cloned through workerData). */
export interface WorkerData {
  readonly fuseFd: number;
  readonly fastPath: FastPathHandle;
  /** One Float64 slot: the volume size in bytes, kept current by the main thread. */
  readonly size: SharedArrayBuffer;
  readonly readOnly: boolean;
  /** The I/O counters (stats.ts), which the workers add to. */
  readonly stats: FuseStatsHandle;
}

/**
 * A request the worker hands to the main thread; the main thread replies to `unique`. `start`: the
 * hrtime the worker read it at (its latency ends at the main thread's reply).
 */
export type Forwarded = { readonly unique: bigint; readonly start: bigint } & (
  | { readonly op: typeof Op.Read; readonly offset: number; readonly length: number }
  | { readonly op: typeof Op.Write; readonly offset: number; readonly data: Uint8Array; readonly fua: boolean }
  | { readonly op: typeof Op.Fsync }
  | { readonly op: typeof Op.Fallocate; readonly offset: number; readonly length: number; readonly mode: number }
);

/** Worker → main messages: a forwarded request, or a line for the log. */
export type WorkerMessage = { readonly kind: 'request'; readonly request: Forwarded } | { readonly kind: 'log'; readonly msg: string; readonly fields?: object };
/**
 * Writes one reply to /dev/fuse. ENOENT: the request was interrupted and the kernel no longer
 * waits for it; ENODEV: the connection is gone. Neither is an error of ours.
 */
export function writeReply(fuseFd: number, reply: Buffer): void {
  try {
    fs.writeSync(fuseFd, reply);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENODEV') throw err;
  }
}

