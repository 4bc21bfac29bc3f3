/**
 * The FUSE wire layouts flashcsi uses, from <linux/fuse.h> (kernel protocol 7.x, little-endian,
 * no padding beyond what the structs spell out). One place for every opcode, flag and offset: the
 * worker threads (worker.ts) and the main thread (export.ts) encode and decode with these only.
 *
 * A request read from /dev/fuse is a fuse_in_header followed by the opcode's `*_in` struct (and,
 * for WRITE, the data; for LOOKUP, a NUL-terminated name). A reply written to /dev/fuse is a
 * fuse_out_header followed by the opcode's `*_out` struct (for READ: the data). A reply is one
 * write(2); an error reply is the header alone with `error` = -errno.
 *
 * Version: flashcsi speaks 7.31 (max_pages, 7.28; FALLOCATE, 7.19; the 64-byte init_out, 7.23).
 * The kernel offers its own minor in INIT (6.18: 7.44); the connection uses the lower of the two.
 * A kernel below MIN_MINOR is refused (EPROTO in the INIT reply: the mount then fails its I/O).
 */

/** Protocol major version; a kernel offering another major is answered with ours (it re-sends INIT). */
export const KERNEL_VERSION = 7;
/** The minor version flashcsi implements. */
export const KERNEL_MINOR_VERSION = 31;
/** The oldest minor flashcsi accepts: 7.23 brought the 64-byte fuse_init_out used here. */
export const MIN_MINOR = 23;

/** Node id of the mount's root directory (FUSE_ROOT_ID). */
export const ROOT_ID = 1;
/** The kernel refuses a /dev/fuse read buffer smaller than this (FUSE_MIN_READ_BUFFER). */
export const MIN_READ_BUFFER = 8192;

/** Opcodes (enum fuse_opcode): only those flashcsi answers or must know to ignore. */
export const Op = {
  Lookup: 1,
  /** No reply. */
  Forget: 2,
  Getattr: 3,
  Setattr: 4,
  Open: 14,
  Read: 15,
  Write: 16,
  Statfs: 17,
  Release: 18,
  Fsync: 20,
  Flush: 25,
  Init: 26,
  Opendir: 27,
  Releasedir: 29,
  Fsyncdir: 30,
  /** No reply: the interrupted request still gets its own reply. */
  Interrupt: 36,
  Destroy: 38,
  /** No reply. */
  BatchForget: 42,
  Fallocate: 43,
} as const;

/** FUSE_INIT flags (fuse_init_in.flags / fuse_init_out.flags): the ones flashcsi asks for. */
export const InitFlag = {
  /** The kernel may send several READs of one file at once. */
  AsyncRead: 1 << 0,
  /** WRITE may carry more than one page (up to max_write). */
  BigWrites: 1 << 5,
  /** Direct I/O (the loop device's) is submitted asynchronously: many requests in flight. */
  AsyncDio: 1 << 15,
  /** init_out.max_pages is valid (requests up to max_pages pages, i.e. 1 MiB READs). */
  MaxPages: 1 << 22,
} as const;

/** fuse_setattr_in.valid: the size field is set (truncate). */
export const FATTR_SIZE = 1 << 3;

/** fallocate(2) modes as FALLOCATE carries them (<linux/falloc.h>). */
export const Falloc = {
  KeepSize: 0x01,
  PunchHole: 0x02,
  ZeroRange: 0x10,
} as const;

/** open(2) flags seen in fuse_open_in.flags and fuse_write_in.flags. */
export const OpenFlag = {
  AccessMode: 0o3,
  ReadOnly: 0o0,
  /** O_DSYNC (O_SYNC includes this bit): the write must be durable when answered. */
  Dsync: 0o10000,
} as const;

/** Linux errno values used in replies (asm-generic/errno-base.h, errno.h). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EINVAL: 22,
  ENOSPC: 28,
  EROFS: 30,
  ENOSYS: 38,
  EPROTO: 71,
  EOPNOTSUPP: 95,
  ESHUTDOWN: 108,
} as const;
export type Errno = (typeof Errno)[keyof typeof Errno];

/**
 * struct fuse_in_header (40 bytes), in front of every request.
 *   0 len u32 (whole request) · 4 opcode u32 · 8 unique u64 (echoed in the reply) · 16 nodeid u64
 *   24 uid u32 · 28 gid u32 · 32 pid u32 · 36 total_extlen u16 (0: no extensions asked for) · 38 padding u16
 */
export const InHeader = { size: 40, len: 0, opcode: 4, unique: 8, nodeid: 16, uid: 24, gid: 28, pid: 32 } as const;

/**
 * struct fuse_out_header (16 bytes), in front of every reply.
 *   0 len u32 (whole reply) · 4 error i32 (0 or -errno) · 8 unique u64
 */
export const OutHeader = { size: 16, len: 0, error: 4, unique: 8 } as const;

/**
 * struct fuse_init_in (64 bytes since 7.36; 16 before: `size` is the part flashcsi reads).
 *   0 major u32 · 4 minor u32 · 8 max_readahead u32 · 12 flags u32 · 16 flags2 u32 · 20 unused[11]
 */
export const InitIn = { size: 16, major: 0, minor: 4, maxReadahead: 8, flags: 12 } as const;

/**
 * struct fuse_init_out (64 bytes since 7.23).
 *   0 major u32 · 4 minor u32 · 8 max_readahead u32 · 12 flags u32
 *   16 max_background u16 · 18 congestion_threshold u16 · 20 max_write u32 · 24 time_gran u32
 *   28 max_pages u16 · 30 map_alignment u16 · 32 flags2 u32 · 36 unused[7]
 */
export const InitOut = {
  size: 64,
  major: 0,
  minor: 4,
  maxReadahead: 8,
  flags: 12,
  maxBackground: 16,
  congestionThreshold: 18,
  maxWrite: 20,
  timeGran: 24,
  maxPages: 28,
} as const;

/**
 * struct fuse_attr (88 bytes), inside entry_out and attr_out.
 *   0 ino u64 · 8 size u64 · 16 blocks u64 (512-byte units) · 24 atime u64 · 32 mtime u64 · 40 ctime u64
 *   48 atimensec u32 · 52 mtimensec u32 · 56 ctimensec u32 · 60 mode u32 · 64 nlink u32 · 68 uid u32
 *   72 gid u32 · 76 rdev u32 · 80 blksize u32 · 84 flags u32
 */
export const Attr = { size: 88, ino: 0, fileSize: 8, blocks: 16, mode: 60, nlink: 64, uid: 68, gid: 72, blksize: 80 } as const;

/**
 * struct fuse_entry_out (40 + 88 bytes), the LOOKUP reply.
 *   0 nodeid u64 · 8 generation u64 · 16 entry_valid u64 (s) · 24 attr_valid u64 (s)
 *   32 entry_valid_nsec u32 · 36 attr_valid_nsec u32 · 40 attr (fuse_attr)
 */
export const EntryOut = { size: 40 + Attr.size, nodeid: 0, generation: 8, entryValid: 16, attrValid: 24, attr: 40 } as const;

/**
 * struct fuse_attr_out (16 + 88 bytes), the GETATTR and SETATTR reply.
 *   0 attr_valid u64 (s) · 8 attr_valid_nsec u32 · 12 dummy u32 · 16 attr (fuse_attr)
 */
export const AttrOut = { size: 16 + Attr.size, attrValid: 0, attr: 16 } as const;

/**
 * struct fuse_setattr_in (88 bytes).
 *   0 valid u32 (FATTR_* bits) · 4 padding · 8 fh u64 · 16 size u64 · 24 lock_owner u64 · 32 atime u64
 *   40 mtime u64 · 48 ctime u64 · 56 atimensec u32 · 60 mtimensec u32 · 64 ctimensec u32 · 68 mode u32
 *   72 unused4 · 76 uid u32 · 80 gid u32 · 84 unused5
 */
export const SetattrIn = { valid: 0, size: 16 } as const;

/**
 * struct fuse_open_in (8 bytes): 0 flags u32 (open(2) flags) · 4 open_flags u32 (FUSE_OPEN_*).
 * struct fuse_open_out (16 bytes): 0 fh u64 · 8 open_flags u32 (FOPEN_*: DIRECT_IO 1, KEEP_CACHE 2; flashcsi
 *   sets neither, see worker.ts) · 12 padding (backing_id).
 */
export const OpenIn = { flags: 0 } as const;
export const OpenOut = { size: 16, fh: 0, openFlags: 8 } as const;

/**
 * struct fuse_read_in (40 bytes).
 *   0 fh u64 · 8 offset u64 · 16 size u32 · 20 read_flags u32 · 24 lock_owner u64 · 32 flags u32 · 36 padding
 * The reply is the out header followed by the bytes read (fewer than `size` only at end of file).
 */
export const ReadIn = { size: 40, offset: 8, length: 16 } as const;

/**
 * struct fuse_write_in (40 bytes), followed by the data.
 *   0 fh u64 · 8 offset u64 · 16 size u32 · 20 write_flags u32 · 24 lock_owner u64 · 32 flags u32 (open flags)
 *   36 padding
 * struct fuse_write_out (8 bytes): 0 size u32 (bytes written) · 4 padding.
 */
export const WriteIn = { size: 40, offset: 8, length: 16, flags: 32 } as const;
export const WriteOut = { size: 8, written: 0 } as const;

/** struct fuse_fsync_in (16 bytes): 0 fh u64 · 8 fsync_flags u32 (1: fdatasync) · 12 padding. The reply has no body. */
export const FsyncIn = { size: 16, flags: 8 } as const;

/**
 * struct fuse_fallocate_in (32 bytes): 0 fh u64 · 8 offset u64 · 16 length u64 · 24 mode u32 · 28 padding.
 * The reply has no body.
 */
export const FallocateIn = { size: 32, offset: 8, length: 16, mode: 24 } as const;

/**
 * struct fuse_statfs_out = struct fuse_kstatfs (80 bytes).
 *   0 blocks u64 · 8 bfree u64 · 16 bavail u64 · 24 files u64 · 32 ffree u64 · 40 bsize u32
 *   44 namelen u32 · 48 frsize u32 · 52 padding · 56 spare[6]
 */
export const StatfsOut = { size: 80, blocks: 0, bfree: 8, bavail: 16, files: 24, ffree: 32, bsize: 40, namelen: 44, frsize: 48 } as const;

/** Writes a fuse_out_header for a reply of `bodyLength` bytes after the header. */
export function writeOutHeader(buf: Buffer, unique: bigint, errno: number, bodyLength: number): void {
  buf.writeUInt32LE(OutHeader.size + bodyLength, OutHeader.len);
  buf.writeInt32LE(-errno, OutHeader.error);
  buf.writeBigUInt64LE(unique, OutHeader.unique);
}
