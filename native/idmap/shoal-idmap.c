/*
 * shoal-idmap: mounts an instance's overlay root over an id-mapped view of the layers
 * (Linux >= 5.12 for id-mapped mounts, >= 5.19 for overlayfs on them).
 *
 *   shoal-idmap <host-id> <count> <lower-parent> <upper-parent> <target> <options>
 *
 * (<host-id> "-": no id mapping, only the neutral paths described below.)
 *
 *   shoal-idmap <host-id> <count> <lower-parent> --tmpfs=<KiB> <target> <options>
 *
 * first mounts a tmpfs of that size (nosuid,nodev, root owned by <host-id>) at <target>,
 * makes upper/ (owned by <host-id>) and work/ in it and uses it as the upper parent: the
 * instance's writable layer is then bounded, and the whole root costs one exec.
 *
 * The layers under <lower-parent> are seen through an id-mapped mount in which a file
 * owned by uid/gid N (0 <= N < count) shows as owned by <host-id> + N. In an instance
 * whose user namespace maps 0..count-1 to <host-id>.., the image's files keep their owners
 * (root stays root inside) while the layer cache stays as it is, shared, with no copy or
 * chown per instance.
 *
 * <options> are overlayfs's, with lowerdir paths relative to <lower-parent> and upperdir
 * and workdir written as @U/<name> (relative to <upper-parent>). The mount is made from
 * inside the id-mapped view (its cwd) and names the upper dir by descriptor, so the
 * options the instance can read in /proc/self/mountinfo hold no host path. The view itself
 * is never attached anywhere: overlayfs keeps its own reference, nothing to clean up.
 * The overlay is mounted nosuid,nodev: a setuid file an instance writes is inert on the host.
 *
 * How: a throwaway child enters a new user namespace with the wanted mapping, we take a
 * handle on that namespace, and set it on a detached copy of <lower-parent>
 * (open_tree + mount_setattr(MOUNT_ATTR_IDMAP)).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
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
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

struct shoal_mount_attr {
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, text, strlen(text));
  close(fd);
  return n == (ssize_t)strlen(text) ? 0 : -1;
}

static void die(const char *what) {
  fprintf(stderr, "shoal-idmap: %s: %s\n", what, strerror(errno));
  exit(1);
}

/* A user namespace with the mapping 0..count-1 → host..; returns a descriptor of it. */
static int user_namespace(unsigned long host, unsigned long count) {
  int ready[2], done[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) die("pipe");
  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    close(ready[0]);
    close(done[1]);
    char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    (void)!read(done[0], &c, 1); /* until the parent holds the namespace */
    _exit(0);
  }
  close(ready[1]);
  close(done[0]);
  char c = 'n', path[64], map[96];
  if (read(ready[0], &c, 1) != 1 || c != 'y') die("entering a user namespace");
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)child);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0) die("opening the user namespace");
  snprintf(map, sizeof map, "0 %lu %lu\n", host, count);
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)child);
  if (write_file(path, map) < 0) die("writing uid_map");
  snprintf(path, sizeof path, "/proc/%d/gid_map", (int)child);
  if (write_file(path, map) < 0) die("writing gid_map");
  close(done[1]);
  waitpid(child, NULL, 0);
  return ns;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: shoal-idmap <host-id|-> <count> <lower-parent> <upper-parent> <target> <options>\n");
    return 2;
  }
  int mapped = strcmp(argv[1], "-") != 0;
  unsigned long host = strtoul(argv[1], NULL, 10), count = strtoul(argv[2], NULL, 10);
  if (mapped && count == 0) {
    fprintf(stderr, "shoal-idmap: count must be positive\n");
    return 2;
  }
  int ns = mapped ? user_namespace(host, count) : -1;
  int tree = (int)syscall(SYS_open_tree, AT_FDCWD, argv[3], OPEN_TREE_CLONE | O_CLOEXEC | AT_RECURSIVE);
  if (tree < 0) die("open_tree");
  struct shoal_mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)ns};
  if (mapped && syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0) die("mount_setattr(MOUNT_ATTR_IDMAP)");
  const char *upper_parent = argv[4];
  if (strncmp(argv[4], "--tmpfs=", 8) == 0) {
    char data[128];
    unsigned long owner = mapped ? host : 0;
    snprintf(data, sizeof data, "size=%sk,mode=0755,uid=%lu,gid=%lu", argv[4] + 8, owner, owner);
    if (mount("tmpfs", argv[5], "tmpfs", MS_NOSUID | MS_NODEV, data) < 0) die("mounting the tmpfs");
    upper_parent = argv[5];
  }
  int upper = open(upper_parent, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (upper < 0) die("opening the upper parent");
  if (upper_parent == argv[5]) {
    int dirfd = open(upper_parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 || mkdirat(dirfd, "upper", 0755) < 0 || mkdirat(dirfd, "work", 0700) < 0) die("making upper and work");
    if (mapped && fchownat(dirfd, "upper", (uid_t)host, (gid_t)host, 0) < 0) die("chown upper");
    close(dirfd);
  }
  /* @U → /proc/self/fd/<upper>: overlayfs resolves the options at mount time. */
  char options[8192], fdpath[32];
  snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", upper);
  size_t o = 0;
  for (const char *p = argv[6]; *p; p++) {
    char one[2] = {*p, 0};
    const char *piece = one;
    if (p[0] == '@' && p[1] == 'U') {
      piece = fdpath;
      p++;
    }
    size_t n = strlen(piece);
    if (o + n + 1 > sizeof options) {
      fprintf(stderr, "shoal-idmap: options too long\n");
      return 2;
    }
    memcpy(options + o, piece, n);
    o += n;
  }
  options[o] = 0;
  if (fchdir(tree) < 0) die("entering the layers' view");
  if (mount("overlay", argv[5], "overlay", MS_NOSUID | MS_NODEV, options) < 0) {
    int e = errno;
    if (upper_parent == argv[5]) umount2(argv[5], MNT_DETACH);
    errno = e;
    die("mounting the overlay");
  }
  return 0;
}
