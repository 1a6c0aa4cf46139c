/*
 * shoal-run: the last step of the guest's init (PID 1), built static into the kernel
 * template's initramfs. The busybox init script has loaded the modules, configured
 * eth0 and mounted the root disk at /newroot; this program:
 *   1. reads the instance's launch spec from /dev/vdb (NUL-separated strings),
 *   2. makes the TCP listening socket QEMU's hostfwd reaches, as fd 3 (LISTEN_FDS=1),
 *   3. forks the service (chroot /newroot, uid/gid, cwd, exactly the spec's env),
 *   4. reaps everything; when the service exits, writes how to the status disk /dev/vdc
 *      ("shoal-exit-1 <code> <signal> <oom>\n": the whole code, the signal that killed it,
 *      and whether the guest kernel's OOM killer ran), then reports the code's low 7 bits
 *      to QEMU through the isa-debug-exit port (QEMU exits with (code << 1) | 1) and
 *      powers off. The host prefers the status disk; the exit port is the fallback.
 * Spec format: "shoal-spec-1\0" port\0 uid\0 gid\0 cwd\0 argc\0 args...\0 envc\0 env...\0
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_SPEC (256 * 1024)
#define EXIT_PORT 0xf4

static char spec[MAX_SPEC];
static size_t spec_len, pos;

static void die(const char *what) {
  fprintf(stderr, "shoal-run: %s: %s\n", what, strerror(errno));
  if (ioperm(EXIT_PORT, 4, 1) == 0) outl(0x7e, EXIT_PORT); /* 126: the guest could not start it */
  reboot(RB_POWER_OFF);
  _exit(1);
}

/* Whether the guest kernel's OOM killer has killed anything since boot (/proc/vmstat oom_kill). */
static int oom_killed(void) {
  char buf[8192];
  int fd = open("/proc/vmstat", O_RDONLY);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  char *line = strstr(buf, "\noom_kill ");
  return line != NULL && atol(line + 10) > 0;
}

/* One line on the status disk, synced before QEMU is told to exit. */
static void write_status(int code, int sig, int oom) {
  char line[64];
  int len = snprintf(line, sizeof line, "shoal-exit-1 %d %d %d\n", code, sig, oom);
  int fd = open("/dev/vdc", O_WRONLY | O_SYNC);
  if (fd < 0) return;
  if (write(fd, line, (size_t)len) == len) fsync(fd);
  close(fd);
}

static const char *next(void) {
  if (pos >= spec_len) { errno = EINVAL; die("spec too short"); }
  const char *s = spec + pos;
  pos += strlen(s) + 1;
  return s;
}

int main(void) {
  int fd = open("/dev/vdb", O_RDONLY);
  if (fd < 0) die("open /dev/vdb");
  ssize_t n;
  while (spec_len < MAX_SPEC - 1 && (n = read(fd, spec + spec_len, MAX_SPEC - 1 - spec_len)) > 0) spec_len += (size_t)n;
  close(fd);
  if (strcmp(next(), "shoal-spec-1") != 0) { errno = EINVAL; die("spec magic"); }
  int port = atoi(next());
  uid_t uid = (uid_t)atol(next());
  gid_t gid = (gid_t)atol(next());
  const char *cwd = next();
  int argc = atoi(next());
  char **argv = calloc((size_t)argc + 1, sizeof(char *));
  for (int i = 0; i < argc; i++) argv[i] = (char *)next();
  int envc = atoi(next());
  char **envp = calloc((size_t)envc + 3, sizeof(char *));
  for (int i = 0; i < envc; i++) envp[i] = (char *)next();
  envp[envc] = "LISTEN_FDS=1";
  envp[envc + 1] = "LISTEN_FDNAMES=shoal";
  if (argc < 1) { errno = EINVAL; die("no program"); }

  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) die("socket");
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(s, 511) < 0) die("listen");

  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    if (s != 3) { if (dup2(s, 3) < 0) die("dup2"); close(s); }
    if (chroot("/newroot") < 0 || chdir("/") < 0) die("chroot");
    if (chdir(cwd) < 0) die("chdir");
    if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) die("setuid");
    /* PATH lookup as the service's own environment says. */
    execvpe(argv[0], argv, envp);
    fprintf(stderr, "shoal-run: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(s);
  for (;;) {
    int status;
    pid_t p = wait(&status);
    if (p < 0) { if (errno == EINTR) continue; die("wait"); }
    if (p != child) continue;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 0x7f;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    sync();
    write_status(WIFEXITED(status) ? code : -1, sig, sig == SIGKILL && oom_killed());
    if (ioperm(EXIT_PORT, 4, 1) == 0) outl((unsigned)(code & 0x7f), EXIT_PORT);
    reboot(RB_POWER_OFF);
    return 0;
  }
}
