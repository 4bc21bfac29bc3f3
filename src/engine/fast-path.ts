/**
 * The live volume's fast path for other threads (CONTRACT SKELETON: the engine developer replaces
 * this body; the signatures below are what src/fuse codes against).
 *
 * A data-path process may serve the live volume from worker threads that do synchronous I/O
 * (src/fuse). Such a thread builds a FastPath from the handle Volume.fastPath() returns (the handle
 * is structured-clonable: it goes through workerData) and, for each request, tries the fast path
 * first. `false` means "not here": the request must go to the main thread's Volume, which applies
 * every rule of the engine (copy-on-write, closed gate, range checks, errors).
 */
export interface FastPathHandle {
  /** The engine's shared state (gate counters, volume size, copied-grain bits). */
  readonly shared: SharedArrayBuffer;
  /** The base image, opened read-write by the volume; -1 when the fast path is off. */
  readonly baseFd: number;
  /** The base image opened with O_DSYNC, for FUA writes; -1 when there is none. */
  readonly baseSyncFd: number;
}

/** Worker side of the fast path. Every method is synchronous and never throws for I/O errors: it returns false. */
export class FastPath {
  constructor(readonly handle: FastPathHandle) {}

  /** Reads `dest.length` bytes of the live volume at `offset`; false: ask the main thread. */
  read(_dest: Buffer, _offset: number): boolean {
    return false;
  }

  /** Writes `data` at `offset` when no copy-on-write is needed; false: ask the main thread. */
  write(_data: Buffer, _offset: number, _fua: boolean): boolean {
    return false;
  }

  /** Makes every completed write durable (fdatasync of the base); false: ask the main thread. */
  flush(): boolean {
    return false;
  }
}
