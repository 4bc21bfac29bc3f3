/**
 * The kernel nbd driver's generic-netlink interface (family "nbd", include/uapi/linux/nbd-netlink.h),
 * through libnl-genl-3 (the library nbd-client itself uses), bound with koffi as src/engine/native.ts
 * binds libc. Four requests and one event:
 *
 *   CONNECT      sockets + size + block size + server flags + timeouts + backend identifier
 *                → the kernel picks a free /dev/nbdN and answers its index
 *   RECONFIGURE  index + sockets: each socket replaces one *dead* connection (live ones are kept;
 *                surplus sockets are dropped, so handing over a full set is always safe); the
 *                identifier must match the one given at CONNECT
 *   DISCONNECT   index
 *   STATUS       index → whether a configuration is attached
 *   LINK_DEAD    multicast (group "nbd_mc_group") when one of a device's connections died
 *
 * Calls are synchronous: the kernel handles a generic-netlink request inside the sending syscall
 * (the socket descriptors are looked up in this process's table right then), and only a synchronous
 * call reads errors reliably. Events are read without blocking, by `LinkDeadEvents.poll()`.
 */
import { createRequire } from 'node:module';

import { HostError } from './errors.js';

/** Attributes (enum nbd_attrs). */
const Attr = {
  Index: 1,
  SizeBytes: 2,
  BlockSizeBytes: 3,
  Timeout: 4,
  ServerFlags: 5,
  ClientFlags: 6,
  Sockets: 7,
  DeadConnTimeout: 8,
  DeviceList: 9,
  BackendIdentifier: 10,
} as const;
const ATTR_MAX = 10;
/** NBD_SOCK_ITEM and its NBD_SOCK_FD; NBD_DEVICE_ITEM and its NBD_DEVICE_CONNECTED. */
const SOCK_ITEM = 1;
const SOCK_FD = 1;
const DEVICE_ITEM = 1;
const DEVICE_CONNECTED = 2;
const DEVICE_ATTR_MAX = 2;
/** Commands (enum nbd_commands). */
const Cmd = { Connect: 1, Disconnect: 2, Reconfigure: 3, LinkDead: 4, Status: 5 } as const;
const FAMILY = 'nbd';
const VERSION = 1;
const MCAST_GROUP = 'nbd_mc_group';

/** libnl constants (netlink/handlers.h, netlink/errno.h). */
const NL_CB_VALID = 0;
const NL_CB_CUSTOM = 3;
const NL_OK = 0;
const NLE_AGAIN = 4;

type Ptr = unknown;
interface Libnl {
  readonly koffi: typeof import('koffi');
  readonly socketAlloc: () => Ptr;
  readonly socketFree: (sk: Ptr) => void;
  readonly genlConnect: (sk: Ptr) => number;
  readonly resolve: (sk: Ptr, name: string) => number;
  readonly resolveGroup: (sk: Ptr, family: string, group: string) => number;
  readonly msgAlloc: () => Ptr;
  readonly msgFree: (msg: Ptr) => void;
  readonly genlmsgPut: (msg: Ptr, port: number, seq: number, family: number, hdrlen: number, flags: number, cmd: number, version: number) => Ptr;
  readonly putU32: (msg: Ptr, attr: number, value: number) => number;
  readonly putU64: (msg: Ptr, attr: number, value: bigint) => number;
  readonly putString: (msg: Ptr, attr: number, value: string) => number;
  readonly nestStart: (msg: Ptr, attr: number) => Ptr;
  readonly nestEnd: (msg: Ptr, start: Ptr) => number;
  readonly sendSync: (sk: Ptr, msg: Ptr) => number;
  readonly modifyCb: (sk: Ptr, type: number, kind: number, cb: Ptr, arg: Ptr) => number;
  readonly disableSeqCheck: (sk: Ptr) => void;
  readonly addMembership: (sk: Ptr, group: number) => number;
  readonly setNonblocking: (sk: Ptr) => number;
  readonly recvDefault: (sk: Ptr) => number;
  readonly msgHdr: (msg: Ptr) => Ptr;
  readonly genlHdr: (nlh: Ptr) => Ptr;
  readonly parse: (nlh: Ptr, hdrlen: number, tb: Buffer, maxtype: number, policy: Ptr) => number;
  readonly parseNested: (tb: Buffer, maxtype: number, nla: Ptr, policy: Ptr) => number;
  readonly getU32: (nla: Ptr) => number;
  readonly getU8: (nla: Ptr) => number;
  readonly geterror: (err: number) => string;
  readonly callbackType: unknown;
}

let lib: Libnl | undefined;

/** libnl, bound on first use; FAILED_PRECONDITION when the library is missing (Debian: libnl-genl-3-200). */
function libnl(): Libnl {
  if (lib !== undefined) return lib;
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  let core, genl;
  try {
    core = koffi.load('libnl-3.so.200');
    genl = koffi.load('libnl-genl-3.so.200');
  } catch (err) {
    throw new HostError('FAILED_PRECONDITION', `libnl-genl-3 is not installed (Debian/Ubuntu: libnl-genl-3-200): ${(err as Error).message}`);
  }
  const callbackType = koffi.pointer(koffi.proto('int flashcsi_nl_recvmsg_cb(void *msg, void *arg)'));
  lib = {
    koffi,
    callbackType,
    socketAlloc: core.func('void *nl_socket_alloc(void)'),
    socketFree: core.func('void nl_socket_free(void *sk)'),
    genlConnect: genl.func('int genl_connect(void *sk)'),
    resolve: genl.func('int genl_ctrl_resolve(void *sk, const char *name)'),
    resolveGroup: genl.func('int genl_ctrl_resolve_grp(void *sk, const char *family, const char *grp)'),
    msgAlloc: core.func('void *nlmsg_alloc(void)'),
    msgFree: core.func('void nlmsg_free(void *msg)'),
    genlmsgPut: genl.func('void *genlmsg_put(void *msg, uint32_t port, uint32_t seq, int family, int hdrlen, int flags, uint8_t cmd, uint8_t version)'),
    putU32: core.func('int nla_put_u32(void *msg, int attrtype, uint32_t value)'),
    putU64: core.func('int nla_put_u64(void *msg, int attrtype, uint64_t value)'),
    putString: core.func('int nla_put_string(void *msg, int attrtype, const char *str)'),
    nestStart: core.func('void *nla_nest_start(void *msg, int attrtype)'),
    nestEnd: core.func('int nla_nest_end(void *msg, void *start)'),
    sendSync: core.func('int nl_send_sync(void *sk, void *msg)'),
    modifyCb: core.func('int nl_socket_modify_cb(void *sk, int type, int kind, flashcsi_nl_recvmsg_cb *func, void *arg)'),
    disableSeqCheck: core.func('void nl_socket_disable_seq_check(void *sk)'),
    addMembership: core.func('int nl_socket_add_membership(void *sk, int group)'),
    setNonblocking: core.func('int nl_socket_set_nonblocking(void *sk)'),
    recvDefault: core.func('int nl_recvmsgs_default(void *sk)'),
    msgHdr: core.func('void *nlmsg_hdr(void *msg)'),
    genlHdr: genl.func('void *genlmsg_hdr(void *nlh)'),
    parse: genl.func('int genlmsg_parse(void *nlh, int hdrlen, void *tb, int maxtype, void *policy)'),
    parseNested: core.func('int nla_parse_nested(void *tb, int maxtype, void *nla, void *policy)'),
    getU32: core.func('uint32_t nla_get_u32(void *nla)'),
    getU8: core.func('uint8_t nla_get_u8(void *nla)'),
    geterror: core.func('const char *nl_geterror(int error)'),
  };
  return lib;
}

/** A generic-netlink socket bound to the nbd family, with a callback for the messages it receives. */
class GenlSocket {
  readonly sk: Ptr;
  readonly family: number;
  private readonly callback: unknown;
  private closed = false;

  constructor(
    private readonly l: Libnl,
    onMessage: (cmd: number, attrs: (Ptr | null)[]) => void,
  ) {
    const sk = l.socketAlloc();
    if (sk === null) throw new HostError('NETLINK_FAILED', 'nl_socket_alloc failed');
    this.sk = sk;
    try {
      const rc = l.genlConnect(sk);
      if (rc < 0) throw new HostError('NETLINK_FAILED', `genl_connect: ${l.geterror(rc)}`);
      const family = l.resolve(sk, FAMILY);
      if (family < 0) throw new HostError('FAILED_PRECONDITION', `the kernel has no nbd netlink family (is the nbd module loaded?): ${l.geterror(family)}`);
      this.family = family;
      this.callback = l.koffi.register((msg: Ptr) => {
        const nlh = l.msgHdr(msg);
        const tb = Buffer.alloc(8 * (ATTR_MAX + 1));
        if (l.parse(nlh, 0, tb, ATTR_MAX, null) === 0) {
          const cmd = l.koffi.decode(l.genlHdr(nlh), 'uint8_t') as number;
          onMessage(cmd, attrPointers(l, tb, ATTR_MAX));
        }
        return NL_OK;
      }, l.callbackType as never);
      const cb = l.modifyCb(sk, NL_CB_VALID, NL_CB_CUSTOM, this.callback, null);
      if (cb < 0) throw new HostError('NETLINK_FAILED', `nl_socket_modify_cb: ${l.geterror(cb)}`);
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** Builds a request, sends it and waits for the kernel's answer (replies reach the callback first). */
  request(cmd: number, what: string, fill: (msg: Ptr) => void): void {
    const l = this.l;
    const msg = l.msgAlloc();
    if (msg === null) throw new HostError('NETLINK_FAILED', 'nlmsg_alloc failed');
    try {
      if (l.genlmsgPut(msg, 0, 0, this.family, 0, 0, cmd, VERSION) === null) throw new HostError('NETLINK_FAILED', 'genlmsg_put failed');
      fill(msg);
    } catch (err) {
      l.msgFree(msg);
      throw err;
    }
    const rc = l.sendSync(this.sk, msg); // frees msg
    if (rc < 0) throw new HostError('NETLINK_FAILED', `netlink ${what} failed: ${l.geterror(rc)} (the kernel log says why)`);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.l.socketFree(this.sk);
    if (this.callback !== undefined) this.l.koffi.unregister(this.callback as never);
  }
}

function attrPointers(l: Libnl, tb: Buffer, max: number): (Ptr | null)[] {
  const out: (Ptr | null)[] = [];
  for (let i = 0; i <= max; i++) out.push(tb.readBigUInt64LE(8 * i) === 0n ? null : l.koffi.decode(tb, 8 * i, 'void *'));
  return out;
}

function check(l: Libnl, rc: number, what: string): void {
  if (rc < 0) throw new HostError('NETLINK_FAILED', `building the netlink request failed at ${what}: ${l.geterror(rc)}`);
}

function putSockets(l: Libnl, msg: Ptr, fds: readonly number[]): void {
  const socks = l.nestStart(msg, Attr.Sockets);
  if (socks === null) throw new HostError('NETLINK_FAILED', 'nla_nest_start failed');
  for (const fd of fds) {
    const item = l.nestStart(msg, SOCK_ITEM);
    if (item === null) throw new HostError('NETLINK_FAILED', 'nla_nest_start failed');
    check(l, l.putU32(msg, SOCK_FD, fd), 'NBD_SOCK_FD');
    check(l, l.nestEnd(msg, item), 'NBD_SOCK_ITEM');
  }
  check(l, l.nestEnd(msg, socks), 'NBD_ATTR_SOCKETS');
}

export interface ConnectRequest {
  /** Connected, negotiated sockets (one per connection; several need NBD_FLAG_CAN_MULTI_CONN). */
  readonly fds: readonly number[];
  readonly sizeBytes: bigint;
  /** Logical block size, 512…4096. */
  readonly blockSize: number;
  /** The transmission flags the server announced. */
  readonly serverFlags: number;
  /** Seconds before a request counts as stuck and is sent again (0 = never). */
  readonly timeoutSeconds: number;
  /** Seconds the device waits for RECONFIGURE after its connections died, before failing I/O. */
  readonly deadConnTimeoutSeconds: number;
  /** Shown in /sys/block/nbdN/backend; RECONFIGURE must name it again. */
  readonly identifier: string;
}

export interface ReconfigureRequest {
  readonly index: number;
  readonly fds: readonly number[];
  readonly identifier: string;
}

/** Requests to the kernel's nbd driver. */
export class NbdNetlink {
  private readonly socket: GenlSocket;
  private replyIndex: number | undefined;
  private connected: boolean | undefined;

  constructor() {
    const l = libnl();
    this.socket = new GenlSocket(l, (cmd, attrs) => {
      const index = attrs[Attr.Index];
      if (index !== null && index !== undefined) this.replyIndex = l.getU32(index);
      const list = attrs[Attr.DeviceList];
      if (cmd === Cmd.Status && list !== null && list !== undefined) {
        const tb = Buffer.alloc(8 * (DEVICE_ATTR_MAX + 1));
        // The list holds one NBD_DEVICE_ITEM when asked about one index.
        const item = Buffer.alloc(8 * (DEVICE_ITEM + 1));
        if (l.parseNested(item, DEVICE_ITEM, list, null) === 0) {
          const dev = attrPointers(l, item, DEVICE_ITEM)[DEVICE_ITEM];
          if (dev !== null && dev !== undefined && l.parseNested(tb, DEVICE_ATTR_MAX, dev, null) === 0) {
            const c = attrPointers(l, tb, DEVICE_ATTR_MAX)[DEVICE_CONNECTED];
            this.connected = c !== null && c !== undefined && l.getU8(c) !== 0;
          }
        }
      }
    });
  }

  /** Attaches the sockets as a new device; returns its index (/dev/nbd<index>). */
  connect(r: ConnectRequest): number {
    const l = libnl();
    this.replyIndex = undefined;
    this.socket.request(Cmd.Connect, 'CONNECT', (msg) => {
      check(l, l.putU64(msg, Attr.SizeBytes, r.sizeBytes), 'SIZE_BYTES');
      check(l, l.putU64(msg, Attr.BlockSizeBytes, BigInt(r.blockSize)), 'BLOCK_SIZE_BYTES');
      check(l, l.putU64(msg, Attr.ServerFlags, BigInt(r.serverFlags)), 'SERVER_FLAGS');
      check(l, l.putU64(msg, Attr.Timeout, BigInt(r.timeoutSeconds)), 'TIMEOUT');
      check(l, l.putU64(msg, Attr.DeadConnTimeout, BigInt(r.deadConnTimeoutSeconds)), 'DEAD_CONN_TIMEOUT');
      check(l, l.putString(msg, Attr.BackendIdentifier, r.identifier), 'BACKEND_IDENTIFIER');
      putSockets(l, msg, r.fds);
    });
    if (this.replyIndex === undefined) throw new HostError('NETLINK_FAILED', 'the kernel attached a device but did not say which');
    return this.replyIndex;
  }

  /** Replaces the device's dead connections with these sockets (see the module comment). */
  reconfigure(r: ReconfigureRequest): void {
    const l = libnl();
    this.socket.request(Cmd.Reconfigure, 'RECONFIGURE', (msg) => {
      check(l, l.putU32(msg, Attr.Index, r.index), 'INDEX');
      check(l, l.putString(msg, Attr.BackendIdentifier, r.identifier), 'BACKEND_IDENTIFIER');
      putSockets(l, msg, r.fds);
    });
  }

  /** Disconnects the device: its connections get NBD_CMD_DISC, I/O after it fails. */
  disconnect(index: number): void {
    const l = libnl();
    this.socket.request(Cmd.Disconnect, 'DISCONNECT', (msg) => check(l, l.putU32(msg, Attr.Index, index), 'INDEX'));
  }

  /** Whether device `index` has a configuration attached (connected, or waiting for a reconnect). */
  isConfigured(index: number): boolean {
    const l = libnl();
    this.connected = undefined;
    this.socket.request(Cmd.Status, 'STATUS', (msg) => check(l, l.putU32(msg, Attr.Index, index), 'INDEX'));
    return this.connected === true;
  }

  close(): void {
    this.socket.close();
  }
}

/** The kernel's LINK_DEAD multicasts, read without blocking. */
export class LinkDeadEvents {
  private readonly socket: GenlSocket;
  private dead: number[] = [];

  constructor() {
    const l = libnl();
    this.socket = new GenlSocket(l, (cmd, attrs) => {
      const index = attrs[Attr.Index];
      if (cmd === Cmd.LinkDead && index !== null && index !== undefined) this.dead.push(l.getU32(index));
    });
    try {
      l.disableSeqCheck(this.socket.sk);
      const group = l.resolveGroup(this.socket.sk, FAMILY, MCAST_GROUP);
      if (group < 0) throw new HostError('NETLINK_FAILED', `no multicast group ${MCAST_GROUP}: ${l.geterror(group)}`);
      check(l, l.addMembership(this.socket.sk, group), 'nl_socket_add_membership');
      check(l, l.setNonblocking(this.socket.sk), 'nl_socket_set_nonblocking');
    } catch (err) {
      this.socket.close();
      throw err;
    }
  }

  /** Indexes of devices that lost a connection since the last poll (repeats possible). */
  poll(): number[] {
    const l = libnl();
    for (;;) {
      const rc = l.recvDefault(this.socket.sk);
      if (rc === -NLE_AGAIN || rc === 0) break;
      if (rc < 0) throw new HostError('NETLINK_FAILED', `reading nbd netlink events: ${l.geterror(rc)}`);
    }
    const out = this.dead;
    this.dead = [];
    return out;
  }

  close(): void {
    this.socket.close();
  }
}
