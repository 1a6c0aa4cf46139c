/*
 * shoal-graft: adds a service's layers to a container created ahead for its template
 * (runc create'd, not started: only runc's own init runs in it), by mounting them inside
 * the container's mount namespace. Nothing appears in the host's mount table: the mounts
 * live and die with the container.
 *
 *   shoal-graft <init-pid> <host-id|-> <count> <lower-parent> <size-KiB> <name>=<lowers>...
 *
 * For each <name> (one path component: a top-level directory the template's root lacks),
 * /<name> in the container becomes an overlay of <lowers> (':'-separated, top first,
 * relative to <lower-parent>), seen through an id-mapped view as in shoal-idmap.c (with the
 * container's own user namespace when it maps exactly <host-id> <count>), over a
 * writable upper dir of its own. Every upper dir lives in one new tmpfs of <size-KiB>
 * (nosuid,nodev, owned by <host-id>): the service's writes stay bounded. The mounts are
 * made detached in the host's namespace (fsopen/fsmount: the layer paths are resolved
 * here, never inside the container), then the helper enters the container's mount
 * namespace and moves them onto /<name>, a directory it makes there unless the template
 * has one (anything else by that name fails). Linux >= 5.8 (pidfd setns).
 *
 *   shoal-graft --wait <init-pid> <host-id|-> <count> <lower-parent>
 *
 * does what needs no service ahead (the container's handle, the id-mapped view), writes
 * "ready" to stdout, then reads one line "<size-KiB> <name>=<lowers>..." from stdin and
 * goes on as above, writing "ok" when done (end of input: exits doing nothing). Started
 * with a pre-created container, it takes the process start off the deployment's path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif
#ifndef MOUNT_ATTR_NOSUID
#define MOUNT_ATTR_NOSUID 0x00000002
#endif
#ifndef MOUNT_ATTR_NODEV
#define MOUNT_ATTR_NODEV 0x00000004
#endif
#ifndef FSOPEN_CLOEXEC
#define FSOPEN_CLOEXEC 0x00000001
#endif
#ifndef FSMOUNT_CLOEXEC
#define FSMOUNT_CLOEXEC 0x00000001
#endif
#ifndef FSCONFIG_SET_STRING
#define FSCONFIG_SET_STRING 1
#define FSCONFIG_CMD_CREATE 6
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_fsopen
#define SYS_fsopen 430
#endif
#ifndef SYS_fsconfig
#define SYS_fsconfig 431
#endif
#ifndef SYS_fsmount
#define SYS_fsmount 432
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

#define MAX_MOUNTS 32

struct shoal_mount_attr {
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static void die(const char *what, const char *name) {
  fprintf(stderr, "shoal-graft: %s%s%s: %s\n", what, name ? " " : "", name ? name : "", strerror(errno));
  exit(1);
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* A user namespace with the mapping 0..count-1 → host..; returns a descriptor of it. */
static int user_namespace(unsigned long host, unsigned long count) {
  int ready[2], done[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) die("pipe", NULL);
  pid_t child = fork();
  if (child < 0) die("fork", NULL);
  if (child == 0) {
    close(ready[0]);
    close(done[1]);
    char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    (void)!read(done[0], &c, 1);
    _exit(0);
  }
  close(ready[1]);
  close(done[0]);
  char c = 'n', path[64], map[96];
  if (read(ready[0], &c, 1) != 1 || c != 'y') die("entering a user namespace", NULL);
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)child);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) die("opening the user namespace", NULL);
  snprintf(map, sizeof map, "0 %lu %lu\n", host, count);
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)child);
  if (write_file(path, map) < 0) die("writing uid_map", NULL);
  snprintf(path, sizeof path, "/proc/%d/gid_map", (int)child);
  if (write_file(path, map) < 0) die("writing gid_map", NULL);
  close(done[1]);
  waitpid(child, NULL, 0);
  return ns;
}

/*
 * The container's own user namespace when its mapping is exactly 0 <host> <count> for
 * users and groups (what the agent asks runc for): no namespace to make. Else -1.
 */
static int container_namespace(int pid, int pidfd, unsigned long host, unsigned long count) {
  char path[64], got[256];
  const char *maps[] = {"uid_map", "gid_map"};
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "/proc/%d/%s", pid, maps[i]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, got, sizeof got - 1);
    close(fd);
    if (n <= 0) return -1;
    got[n] = 0;
    /* one line: "<inside> <outside> <count>", columns padded with spaces */
    unsigned long a, b, c;
    char extra;
    if (sscanf(got, " %lu %lu %lu %c", &a, &b, &c, &extra) != 3 || a != 0 || b != host || c != count) return -1;
  }
  snprintf(path, sizeof path, "/proc/%d/ns/user", pid);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  /* Still the process the pidfd names (not a recycled pid)? */
  if (ns >= 0 && syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) < 0) {
    close(ns);
    return -1;
  }
  return ns;
}

static void set(int fs, const char *key, const char *value, const char *what) {
  if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, key, value, 0) < 0) die(what, key);
}

static int create(int fs, unsigned attrs, const char *what) {
  if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) die(what, "create");
  int m = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs);
  if (m < 0) die(what, "fsmount");
  close(fs);
  return m;
}

int main(int argc, char **argv) {
  int wait_mode = argc > 1 && strcmp(argv[1], "--wait") == 0;
  if (wait_mode) {
    argv++;
    argc--;
  }
  if (argc < (wait_mode ? 5 : 7) || (wait_mode && argc != 5) || argc - 6 > MAX_MOUNTS) {
    fprintf(stderr, "usage: shoal-graft [--wait] <init-pid> <host-id|-> <count> <lower-parent> [<size-KiB> <name>=<lowers>...]\n");
    return 2;
  }
  int pid = atoi(argv[1]);
  int mapped = strcmp(argv[2], "-") != 0;
  unsigned long host = mapped ? strtoul(argv[2], NULL, 10) : 0, count = strtoul(argv[3], NULL, 10);
  if (pid <= 1 || (mapped && count == 0)) {
    fprintf(stderr, "shoal-graft: bad pid or id count\n");
    return 2;
  }
  /* The container first: a pid that is gone fails before anything is made. */
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) die("pidfd_open", argv[1]);

  int ns = -1;
  if (mapped) {
    ns = container_namespace(pid, pidfd, host, count);
    if (ns < 0) ns = user_namespace(host, count);
  }
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, argv[4], OPEN_TREE_CLONE | O_CLOEXEC | AT_RECURSIVE);
  if (tree < 0) die("open_tree", argv[4]);
  struct shoal_mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)ns};
  if (mapped && syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) die("mount_setattr(MOUNT_ATTR_IDMAP)", NULL);

  /* What to mount: the arguments, or (--wait) one line on stdin. */
  char **rest = argv + 5;
  int n_rest = argc - 5;
  static char line[65536];
  char *toks[MAX_MOUNTS + 1];
  if (wait_mode) {
    if (write(1, "ready\n", 6) != 6) die("reporting ready", NULL);
    size_t len = 0;
    while (len < sizeof line - 1 && !memchr(line, '\n', len)) {
      ssize_t r = read(0, line + len, sizeof line - 1 - len);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      len += (size_t)r;
    }
    line[len] = 0;
    char *nl = strchr(line, '\n');
    if (!nl) {
      if (len == 0) return 0; /* nobody asked */
      fprintf(stderr, "shoal-graft: no complete line on stdin\n");
      return 2;
    }
    *nl = 0;
    n_rest = 0;
    for (char *save = NULL, *t = strtok_r(line, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
      if (n_rest == MAX_MOUNTS + 1) {
        fprintf(stderr, "shoal-graft: too many mounts\n");
        return 2;
      }
      toks[n_rest++] = t;
    }
    rest = toks;
  }
  if (n_rest < 2) {
    fprintf(stderr, "shoal-graft: need <size-KiB> and at least one <name>=<lowers>\n");
    return 2;
  }
  unsigned long kib = strtoul(rest[0], NULL, 10);
  if (kib == 0) {
    fprintf(stderr, "shoal-graft: bad size\n");
    return 2;
  }
  int n = n_rest - 1;
  char *names[MAX_MOUNTS], *lowers[MAX_MOUNTS];
  for (int i = 0; i < n; i++) {
    char *eq = strchr(rest[1 + i], '=');
    if (!eq || eq == rest[1 + i] || !eq[1]) {
      fprintf(stderr, "shoal-graft: %s is not <name>=<lowers>\n", rest[1 + i]);
      return 2;
    }
    *eq = 0;
    names[i] = rest[1 + i];
    lowers[i] = eq + 1;
    if (strchr(names[i], '/') || strcmp(names[i], ".") == 0 || strcmp(names[i], "..") == 0) {
      fprintf(stderr, "shoal-graft: %s is not one path component\n", names[i]);
      return 2;
    }
  }

  /* One bounded tmpfs holds every upper and work dir. */
  char value[128];
  int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
  if (fs < 0) die("fsopen", "tmpfs");
  snprintf(value, sizeof value, "%luk", kib);
  set(fs, "size", value, "tmpfs");
  set(fs, "mode", "0755", "tmpfs");
  snprintf(value, sizeof value, "%lu", host);
  set(fs, "uid", value, "tmpfs");
  set(fs, "gid", value, "tmpfs");
  int tmp = create(fs, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "tmpfs");

  if (fchdir(tree) < 0) die("entering the layers' view", NULL);
  int mounts[MAX_MOUNTS];
  for (int i = 0; i < n; i++) {
    char upper[32], work[32], path[96];
    snprintf(upper, sizeof upper, "u%d", i);
    snprintf(work, sizeof work, "w%d", i);
    if (mkdirat(tmp, upper, 0755) < 0 || mkdirat(tmp, work, 0700) < 0) die("making upper and work", names[i]);
    if (mapped && fchownat(tmp, upper, (uid_t)host, (gid_t)host, 0) < 0) die("chown upper", names[i]);
    int ovl = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (ovl < 0) die("fsopen", "overlay");
    set(ovl, "lowerdir", lowers[i], "overlay");
    snprintf(path, sizeof path, "/proc/self/fd/%d/%s", tmp, upper);
    set(ovl, "upperdir", path, "overlay");
    snprintf(path, sizeof path, "/proc/self/fd/%d/%s", tmp, work);
    set(ovl, "workdir", path, "overlay");
    mounts[i] = create(ovl, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, "overlay");
  }

  /* Into the container: our root and cwd become its root. */
  if (setns(pidfd, CLONE_NEWNS) < 0) die("entering the container's mount namespace", argv[1]);
  for (int i = 0; i < n; i++) {
    char target[300];
    snprintf(target, sizeof target, "/%s", names[i]);
    struct stat st;
    if (mkdir(target, 0755) < 0 && (errno != EEXIST || lstat(target, &st) < 0 || !S_ISDIR(st.st_mode))) die("making the mount point", target);
    if (syscall(SYS_move_mount, mounts[i], "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0) die("moving the layers onto", target);
  }
  if (wait_mode && write(1, "ok\n", 3) != 3) die("reporting ok", NULL);
  return 0;
}
