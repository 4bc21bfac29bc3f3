/**
 * mountinfo parsing (proc(5)) and the message that names a device's holders in other mount
 * namespaces, from literal samples: paths with escaped spaces decode, optional fields are skipped,
 * and the message says where the copies are and what to run.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { toGrpcStatus } from '../../src/csi/status.js';
import { DeviceHeldError, describeHolds, type NamespaceHold } from '../../src/host/mount-holders.js';
import { parseMountinfo } from '../../src/host/mounts.js';

const SAMPLE = [
  '22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw',
  '812 22 7:3 / /var/lib/kubelet/plugins/kubernetes.io/csi/flashcsi.io/ab12/globalmount rw,relatime shared:412 - ext4 /dev/loop3 rw',
  '813 22 7:3 /data /tmp/with\\040two\\040spaces rw,relatime - ext4 /dev/loop3 rw',
  '814 22 0:52 / /mnt/tab\\011and\\134backslash rw,nosuid master:7 propagate_from:3 - fuse /dev/fuse rw,user_id=0',
  '',
].join('\n');

describe('parseMountinfo', () => {
  it('reads every line, decodes escaped paths and skips the optional fields', () => {
    assert.deepEqual(parseMountinfo(SAMPLE), [
      { majMin: '259:1', root: '/', mountPoint: '/', options: 'rw,relatime', fsType: 'ext4', source: '/dev/nvme0n1p1' },
      {
        majMin: '7:3',
        root: '/',
        mountPoint: '/var/lib/kubelet/plugins/kubernetes.io/csi/flashcsi.io/ab12/globalmount',
        options: 'rw,relatime',
        fsType: 'ext4',
        source: '/dev/loop3',
      },
      { majMin: '7:3', root: '/data', mountPoint: '/tmp/with two spaces', options: 'rw,relatime', fsType: 'ext4', source: '/dev/loop3' },
      { majMin: '0:52', root: '/', mountPoint: '/mnt/tab\tand\\backslash', options: 'rw,nosuid', fsType: 'fuse', source: '/dev/fuse' },
    ]);
  });

  it('ignores lines without the separator', () => {
    assert.deepEqual(parseMountinfo('garbage\n22 1 259:1 / / rw\n'), []);
  });
});

describe('describeHolds', () => {
  const one: NamespaceHold = {
    namespace: 'mnt:[4026532871]',
    processes: [{ pid: 4242, comm: 'sleep' }],
    processCount: 1,
    mountPoints: ['/var/lib/kubelet/plugins/kubernetes.io/csi/flashcsi.io/ab12/globalmount'],
  };

  it('one namespace, one mount point: names them and gives the command', () => {
    assert.equal(
      describeHolds('/dev/loop3', [one]),
      '/dev/loop3 is still in use: its file system is still mounted in 1 other mount namespace ' +
        '(mnt:[4026532871], pid 4242 sleep, at /var/lib/kubelet/plugins/kubernetes.io/csi/flashcsi.io/ab12/globalmount); ' +
        'a process that unshared its mount namespace with private propagation keeps a copy; ' +
        'unmount it there (nsenter -t 4242 -m umount -l /var/lib/kubelet/plugins/kubernetes.io/csi/flashcsi.io/ab12/globalmount) or stop it',
    );
  });

  it('several namespaces and processes: counts the rest and quotes a path for the shell', () => {
    const other: NamespaceHold = {
      namespace: 'mnt:[4026532999]',
      processes: [
        { pid: 900, comm: 'containerd' },
        { pid: 901, comm: 'kubelet' },
        { pid: 950, comm: 'sleep' },
      ],
      processCount: 10,
      mountPoints: ["/tmp/it's here", '/mnt/b'],
    };
    assert.equal(
      describeHolds('/dev/nbd0', [other, one]),
      '/dev/nbd0 is still in use: its file system is still mounted in 2 other mount namespaces ' +
        "(mnt:[4026532999], pid 900 containerd, pid 901 kubelet, pid 950 sleep and 7 other processes, at /tmp/it's here, /mnt/b; " +
        'mnt:[4026532871], pid 4242 sleep, at /var/lib/kubelet/plugins/kubernetes.io/csi/flashcsi.io/ab12/globalmount); ' +
        'a process that unshared its mount namespace with private propagation keeps a copy; ' +
        "unmount every copy there (e.g. nsenter -t 900 -m umount -l '/tmp/it'\\''s here') or stop those processes",
    );
  });

  it('DeviceHeldError: code BUSY, which CSI calls answer FAILED_PRECONDITION, and the wait it explains as cause', () => {
    const cause = new Error('timed out');
    const err = new DeviceHeldError('/dev/loop3', [one], { cause });
    assert.equal(err.name, 'DeviceHeldError');
    assert.equal(err.code, 'BUSY');
    assert.equal(err.cause, cause);
    assert.deepEqual(err.holds, [one]);
    assert.equal(err.message, describeHolds('/dev/loop3', [one]));
    assert.deepEqual(toGrpcStatus(err), { code: status.FAILED_PRECONDITION, details: err.message });
  });
});
