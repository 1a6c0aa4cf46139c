/*
 * shoal-runner: the init of a container pre-created for a template (a runtime's layers,
 * no service yet). runc creates the container with this program as its process, so the
 * service's program, arguments, environment and working dir can be chosen after the
 * container exists. The agent gives it, through `runc --preserve-fds`:
 *   fd 3  the instance's listener (left alone: the service gets it, LISTEN_FDS=1)
 *   fd 4  this program itself (runc executes /proc/self/fd/4: no file in the root)
 *   fd 5  the program to run, written by the agent before `runc start`, as NUL-terminated
 *         strings: <cwd> <argc> <argv...> <env...>
 * It reads fd 5, closes fds 4 and 5, changes to <cwd> and executes argv[0] (searched in
 * the PATH of the given environment when it has no '/'), like runc would have. It runs
 * as the instance's user, with no capabilities, under the instance's seccomp filter.
 * Built static: it runs inside roots whose C library is not the host's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PROGRAM (1 << 20)
#define MAX_STRINGS 8192

static void fail(const char *what, const char *name) {
  fprintf(stderr, "shoal-runner: %s%s%s: %s\n", what, name ? " " : "", name ? name : "", strerror(errno));
  _exit(127);
}

int main(void) {
  static char buf[MAX_PROGRAM + 1];
  static char *strings[MAX_STRINGS + 1];
  size_t len = 0;
  for (;;) {
    ssize_t n = pread(5, buf + len, MAX_PROGRAM - len, (off_t)len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("reading the program (fd 5)", NULL);
    if (n == 0) break;
    len += (size_t)n;
    if (len == MAX_PROGRAM) {
      errno = E2BIG;
      fail("reading the program (fd 5)", NULL);
    }
  }
  close(4);
  close(5);
  buf[len] = 0;
  size_t count = 0;
  for (size_t i = 0; i < len && count < MAX_STRINGS; i += strlen(buf + i) + 1) strings[count++] = buf + i;
  if (count < 3) {
    errno = EINVAL;
    fail("the program names nothing to run", NULL);
  }
  const char *cwd = strings[0];
  long argc = strtol(strings[1], NULL, 10);
  if (argc < 1 || (size_t)argc > count - 2) {
    errno = EINVAL;
    fail("bad argument count in the program", NULL);
  }
  char **argv = strings + 2;
  char **envp = strings + 2 + argc;
  strings[count] = NULL;
  /* argv ends where envp starts: copy argv so that both end in NULL. */
  char *args[MAX_STRINGS + 1];
  for (long i = 0; i < argc; i++) args[i] = argv[i];
  args[argc] = NULL;
  if (chdir(cwd) < 0) fail("chdir", cwd);
  if (strchr(args[0], '/')) {
    execve(args[0], args, envp);
    fail("exec", args[0]);
  }
  const char *path = "/usr/local/bin:/usr/bin:/bin";
  for (char **e = envp; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
  int err = ENOENT;
  for (const char *p = path; ; ) {
    const char *end = strchrnul(p, ':');
    char full[4096];
    int dl = (int)(end - p);
    if (snprintf(full, sizeof full, "%.*s%s%s", dl, p, dl ? "/" : "", args[0]) < (int)sizeof full) {
      execve(full, args, envp);
      if (errno != ENOENT && errno != ENOTDIR) err = errno;
    }
    if (!*end) break;
    p = end + 1;
  }
  errno = err;
  fail("exec", args[0]);
}
