/*
 * shoal-shim: a tiny container monitor (conmon in small) for Shoal's runc driver.
 *
 *   shoal-shim [--listen-fd N [--pass-fd M]...] [--log FILE MAX] <exit-file> <pid-file> <runc> [runc args…]
 *
 * It makes itself a child subreaper, runs runc (with --pid-file <pid-file>), and so
 * becomes the parent of the container's init once runc exits. It then waits for that
 * init and reports its exit status, which the agent could not get otherwise (the init is
 * not the agent's child).
 *
 * Reports go to fd 3 when it is open (a pipe to the agent), one line each:
 *   created <init-pid>      runc succeeded
 *   failed <status>         runc failed (its error is in runc's --log file)
 *   exit <code> <signal>    the init exited: code -1 when killed by a signal, signal 0 otherwise
 *                           (both -1 / 0: it exited, status unknown)
 * The `exit` line is also written to <exit-file> (atomically) so that an agent that
 * restarted meanwhile still learns the status. The shim ignores SIGINT/SIGTERM/SIGHUP so
 * it outlives the agent; it exits right after the init does.
 *
 * --log FILE MAX: runc and the container write into a pipe; a logger process of the
 * shim's appends it to FILE, and when FILE would pass MAX bytes renames it to FILE.1
 * (replacing the older one) and starts a new FILE: an instance's log never takes more
 * than 2 x MAX on the host, however much it writes.
 *
 * --listen-fd N: the instance's listening socket, made by the agent, is open at fd N; runc
 * gets it at fd 3 (for `--preserve-fds 1`) and the shim keeps no copy.
 * --pass-fd M (after --listen-fd, up to 4 times): more descriptors for the container, given
 * to runc at fds 4, 5, … in order (for `--preserve-fds 1+k`); the shim keeps no copy either.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int report_fd = 3;

static void report(const char *line) {
  if (report_fd < 0) return;
  if (write(report_fd, line, strlen(line)) < 0) report_fd = -1; /* the agent went away */
}

static void write_exit_file(const char *path, const char *line) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  ssize_t n = write(fd, line, strlen(line));
  close(fd);
  if (n == (ssize_t)strlen(line)) rename(tmp, path);
}

/* The logger: copies `in` to `path`, rotating at `max` bytes, until every writer is gone. */
static void run_logger(int in, const char *path, long long max) {
  char rotated[4096];
  if (snprintf(rotated, sizeof rotated, "%s.1", path) >= (int)sizeof rotated) _exit(1);
  int out = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  struct stat st;
  long long size = out >= 0 && fstat(out, &st) == 0 ? (long long)st.st_size : 0;
  char buf[65536];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (size > 0 && size + n > max) {
      if (out >= 0) close(out);
      rename(path, rotated);
      out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0640);
      size = 0;
    }
    if (out < 0) continue; /* keep draining: a full pipe would block the instance */
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;
      off += w;
    }
    size += n;
  }
  _exit(0);
}

static pid_t read_pid(const char *path) {
  FILE *f = fopen(path, "re");
  if (!f) return -1;
  long pid = -1;
  if (fscanf(f, "%ld", &pid) != 1) pid = -1;
  fclose(f);
  return (pid_t)pid;
}

static int finish(const char *exit_file, int status) {
  char line[64];
  if (WIFEXITED(status)) snprintf(line, sizeof line, "exit %d 0\n", WEXITSTATUS(status));
  else if (WIFSIGNALED(status)) snprintf(line, sizeof line, "exit -1 %d\n", WTERMSIG(status));
  else snprintf(line, sizeof line, "exit -1 0\n");
  write_exit_file(exit_file, line);
  report(line);
  return 0;
}

int main(int argc, char **argv) {
  int listen_fd = -1;
  if (argc > 2 && strcmp(argv[1], "--listen-fd") == 0) {
    listen_fd = atoi(argv[2]);
    if (listen_fd <= 3) {
      fprintf(stderr, "shoal-shim: --listen-fd must be above 3\n");
      return 2;
    }
    argv += 2;
    argc -= 2;
  }
  int pass_fds[4], n_pass = 0;
  while (listen_fd > 0 && argc > 2 && strcmp(argv[1], "--pass-fd") == 0) {
    int fd = atoi(argv[2]);
    if (n_pass == 4 || fd <= 3 + n_pass + 1 || (n_pass > 0 && fd <= pass_fds[n_pass - 1]) || fd == listen_fd) {
      fprintf(stderr, "shoal-shim: --pass-fd: at most 4, ascending, above 4 and not the listener\n");
      return 2;
    }
    pass_fds[n_pass++] = fd;
    argv += 2;
    argc -= 2;
  }
  const char *log_file = NULL;
  long long log_max = 0;
  if (argc > 3 && strcmp(argv[1], "--log") == 0) {
    log_file = argv[2];
    log_max = atoll(argv[3]);
    if (log_max <= 0) {
      fprintf(stderr, "shoal-shim: --log needs a positive size\n");
      return 2;
    }
    argv += 3;
    argc -= 3;
  }
  if (argc < 4) {
    fprintf(stderr, "usage: shoal-shim [--listen-fd N] <exit-file> <pid-file> <runc> [runc args...]\n");
    return 2;
  }
  const char *exit_file = argv[1], *pid_file = argv[2];
  if (fcntl(report_fd, F_SETFD, FD_CLOEXEC) < 0) report_fd = -1; /* no pipe: file only */

  int ignored[] = {SIGPIPE, SIGINT, SIGTERM, SIGHUP};
  for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) signal(ignored[i], SIG_IGN);
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    perror("shoal-shim: prctl(PR_SET_CHILD_SUBREAPER)");
    report("failed -1\n");
    return 1;
  }

  pid_t logger = -1;
  if (log_file) {
    int p[2];
    if (pipe(p) < 0) {
      perror("shoal-shim: pipe");
      report("failed -1\n");
      return 1;
    }
    logger = fork();
    if (logger < 0) {
      perror("shoal-shim: fork logger");
      report("failed -1\n");
      return 1;
    }
    if (logger == 0) {
      close(p[1]);
      if (report_fd >= 0) close(report_fd);
      if (listen_fd > 0) close(listen_fd);
      for (int i = 0; i < n_pass; i++) close(pass_fds[i]);
      run_logger(p[0], log_file, log_max);
    }
    /* From here on our stdout/stderr, runc's and the container's go to the logger. */
    dup2(p[1], 1);
    dup2(p[1], 2);
    close(p[0]);
    close(p[1]);
  }

  pid_t runc = fork();
  if (runc < 0) {
    perror("shoal-shim: fork");
    report("failed -1\n");
    return 1;
  }
  if (runc == 0) {
    /* Ignored signals survive exec: give runc (and the container) the defaults back. */
    for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++) signal(ignored[i], SIG_DFL);
    if (listen_fd > 0) {
      /* fd 3 is the report pipe here (close-on-exec): the listener takes its place. */
      if (dup2(listen_fd, 3) < 0) {
        perror("shoal-shim: dup2 listener");
        _exit(127);
      }
      close(listen_fd);
      /* Ascending sources above their targets: each dup2 leaves the later ones intact. */
      for (int i = 0; i < n_pass; i++) {
        if (dup2(pass_fds[i], 4 + i) < 0) {
          perror("shoal-shim: dup2 passed fd");
          _exit(127);
        }
        close(pass_fds[i]);
      }
    }
    execvp(argv[3], argv + 3);
    perror("shoal-shim: exec runc");
    _exit(127);
  }

  if (listen_fd > 0) close(listen_fd); /* runc has it; the agent connects by path */
  for (int i = 0; i < n_pass; i++) close(pass_fds[i]);

  /* Children reaped before runc create returned (so before we knew the init's pid). */
  struct { pid_t pid; int status; } early[64];
  int n_early = 0;
  pid_t init = -1;
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      /* ECHILD with a known init: it went without our seeing it (should not happen while we
       * are its reaper). Report the exit with an unknown status. */
      if (init > 0) {
        write_exit_file(exit_file, "exit -1 0\n");
        report("exit -1 0\n");
        return 0;
      }
      report("failed -3\n");
      return 1;
    }
    if (pid == runc) {
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char line[64];
        snprintf(line, sizeof line, "failed %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        report(line);
        return 1;
      }
      init = read_pid(pid_file);
      if (init <= 0) {
        report("failed -2\n");
        return 1;
      }
      char line[64];
      snprintf(line, sizeof line, "created %d\n", (int)init);
      report(line);
      for (int i = 0; i < n_early; i++)
        if (early[i].pid == init) return finish(exit_file, early[i].status);
      continue;
    }
    if (init > 0 && pid == init) return finish(exit_file, status);
    if (pid == logger) continue;
    if (init < 0 && n_early < 64) {
      early[n_early].pid = pid;
      early[n_early].status = status;
      n_early++;
    }
  }
}
