import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allowedSyscalls, CLONE_NAMESPACE_FLAGS, defaultSeccompProfile } from '../../../../src/host/drivers/runc/seccomp.ts';

describe('seccomp profile', () => {
  const profile = defaultSeccompProfile();
  const allowAll = new Set(profile.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW' && !r.args).flatMap((r) => r.names));

  it('denies by default with EPERM on the x86 family', () => {
    assert.equal(profile.defaultAction, 'SCMP_ACT_ERRNO');
    assert.equal(profile.defaultErrnoRet, 1);
    assert.deepEqual(profile.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
    assert.deepEqual(defaultSeccompProfile({ architectures: 'native' }).architectures, ['SCMP_ARCH_X86_64']);
  });

  it('allows the usual few hundred syscalls, each once', () => {
    const names = Object.values(allowedSyscalls).flat();
    assert.equal(new Set(names).size, names.length, 'duplicates');
    assert.ok(names.length >= 280 && names.length <= 360, `${names.length} names`);
    for (const n of ['read', 'write', 'openat', 'mmap', 'futex', 'epoll_pwait', 'execve', 'socketpair', 'accept4', 'statx', 'getrandom', 'rseq', 'wait4', 'exit_group']) {
      assert.ok(allowAll.has(n), `${n} must be allowed`);
    }
  });

  it('leaves out what an unprivileged container must not do', () => {
    const denied = [
      'mount', 'umount', 'umount2', 'pivot_root', 'chroot', 'unshare', 'setns', 'ptrace', 'process_vm_readv', 'process_vm_writev',
      'kcmp', 'bpf', 'perf_event_open', 'userfaultfd', 'kexec_load', 'kexec_file_load', 'init_module', 'finit_module',
      'delete_module', 'reboot', 'swapon', 'swapoff', 'acct', 'settimeofday', 'clock_settime', 'adjtimex', 'sethostname',
      'setdomainname', 'keyctl', 'add_key', 'request_key', 'io_uring_setup', 'io_uring_enter', 'open_by_handle_at',
      'name_to_handle_at', 'fsopen', 'fsmount', 'move_mount', 'open_tree', 'quotactl', 'iopl', 'ioperm', 'syslog', 'modify_ldt',
    ];
    const every = new Set(profile.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW').flatMap((r) => r.names));
    for (const n of denied) assert.ok(!every.has(n), `${n} must not be allowed`);
  });

  it('allows clone only without namespace flags, and sends clone3 to the clone fallback', () => {
    const clone = profile.syscalls.find((r) => r.names.includes('clone'));
    assert.deepEqual(clone?.args, [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }]);
    assert.equal(CLONE_NAMESPACE_FLAGS, 0x7e020000);
    const clone3 = profile.syscalls.find((r) => r.names.includes('clone3'));
    assert.deepEqual(clone3, { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: 38 });
    const socket = profile.syscalls.find((r) => r.names.includes('socket'));
    assert.deepEqual(socket?.args, [{ index: 0, value: 40, op: 'SCMP_CMP_NE' }]);
  });
});
