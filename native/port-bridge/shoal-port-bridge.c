/*
 * shoal-port-bridge: runs a program that listens on TCP $PORT (the Knative / Cloud Run
 * contract) behind Shoal's socket contract.
 *
 *   shoal-port-bridge PORT PROGRAM [ARGS…]
 *
 * It is started in the instance's place, with the instance's listening Unix socket at
 * fd 3 (made by the host, LISTEN_FDS=1). It starts PROGRAM as its child without that
 * descriptor and without LISTEN_FDS, then relays every connection accepted on fd 3 to
 * 127.0.0.1:PORT. Under runc it is the container's init: it runs inside the instance's
 * namespaces (its network is the instance's loopback only), as the instance's user, with
 * the instance's seccomp filter and limits, so it is no more trusted than the program
 * itself and the host only ever talks to the socket it made. A connection the program
 * refuses (not listening yet, or any more) is answered 502 with a JSON body saying so and
 * closed, so the host's readiness probe retries and its log says why.
 *
 * It keeps only fd 3 and stdio of what it inherits: every other descriptor is the program's.
 *
 * It forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the program, reaps
 * every child (as init it inherits the program's orphans), and exits with the program's
 * status (128+N when signal N killed it and it cannot die of the same signal itself).
 *
 * One thread, epoll, non-blocking sockets, a 16 KiB buffer per direction; at most as many
 * connections at once as its descriptor limit allows (more wait in the listen backlog:
 * the listener is not polled meanwhile, so a full table never spins).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define LISTEN_FD 3
#define BUF 16384
#define MAX_PAIRS 4096

struct side;
struct pair {
  int fd[2];        /* 0: the host's connection, 1: the program's */
  char *buf[2];     /* buf[i]: bytes read from fd[i], waiting to be written to fd[1-i] */
  size_t len[2], off[2];
  int eof[2];       /* fd[i] sent EOF */
  int shut[2];      /* fd[i] was shut for writing */
  int connecting;   /* fd[1]'s connect() is in progress */
  int dead;         /* closed; freed after the current batch of events */
  int refused;      /* the program refused: fd[0] got the 502 and is drained until it closes; fd[1] is -1 */
  struct side *tag[2];
};
struct side {
  struct pair *p;
  int i;
};

static int epfd;
static int pairs;
static int max_pairs = MAX_PAIRS;
static int accepting = 1; /* the listener is in the epoll set's interest */

static void set_accepting(int on) {
  if (accepting == on) return;
  struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.ptr = NULL};
  epoll_ctl(epfd, EPOLL_CTL_MOD, LISTEN_FD, &ev);
  accepting = on;
}
static struct sockaddr_in target;

static void die(const char *what) {
  fprintf(stderr, "shoal-port-bridge: %s: %s\n", what, strerror(errno));
  exit(125);
}

static void nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static struct pair *graveyard[MAX_PAIRS + 1];
static int buried;

/* Closes now; frees after the batch, which may still hold events for the other side. */
static void close_pair(struct pair *p) {
  for (int i = 0; i < 2; i++)
    if (p->fd[i] >= 0) close(p->fd[i]); /* close also removes it from the epoll set */
  p->dead = 1;
  graveyard[buried++] = p;
  pairs--;
  set_accepting(1);
}

static void free_dead(void) {
  for (int k = 0; k < buried; k++) {
    struct pair *p = graveyard[k];
    for (int i = 0; i < 2; i++) {
      free(p->buf[i]);
      free(p->tag[i]);
    }
    free(p);
  }
  buried = 0;
}

/* What each side waits for: readable while its buffer is empty and no EOF; writable while the other side's buffer has bytes. */
static void rearm(struct pair *p) {
  for (int i = 0; i < 2; i++) {
    if (p->fd[i] < 0) continue;
    struct epoll_event ev = {0};
    ev.data.ptr = p->tag[i];
    if (p->refused) ev.events = EPOLLIN;
    else if (p->connecting) ev.events = i == 1 ? EPOLLOUT : 0; /* nothing moves before the connection is made */
    else {
      if (!p->eof[i] && p->len[i] == 0) ev.events |= EPOLLIN;
      if (p->len[1 - i] > p->off[1 - i]) ev.events |= EPOLLOUT;
    }
    epoll_ctl(epfd, EPOLL_CTL_MOD, p->fd[i], &ev);
  }
}

/* Moves what can move; returns -1 when the pair is finished or broken. */
static int pump(struct pair *p) {
  for (int i = 0; i < 2; i++) {
    int o = 1 - i;
    if (!p->eof[i] && p->len[i] == 0) {
      ssize_t n = read(p->fd[i], p->buf[i], BUF);
      if (n > 0) {
        p->len[i] = (size_t)n;
        p->off[i] = 0;
      } else if (n == 0) {
        p->eof[i] = 1;
      } else if (errno != EAGAIN && errno != EINTR) {
        return -1;
      }
    }
    while (p->off[i] < p->len[i]) {
      ssize_t n = write(p->fd[o], p->buf[i] + p->off[i], p->len[i] - p->off[i]);
      if (n > 0) p->off[i] += (size_t)n;
      else if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
      else return -1;
    }
    if (p->off[i] == p->len[i]) p->len[i] = p->off[i] = 0;
    if (p->eof[i] && p->len[i] == 0 && !p->shut[o]) {
      shutdown(p->fd[o], SHUT_WR);
      p->shut[o] = 1;
    }
  }
  return p->shut[0] && p->shut[1] ? -1 : 0;
}

static char refused_reply[512];
static size_t refused_len;

/*
 * The program refused the connection: answer 502 (it fits an empty socket buffer), end
 * our side, and read what the caller sends until it closes, so that it reads the reply
 * instead of a reset.
 */
static void refuse(struct pair *p) {
  if (p->fd[1] >= 0) close(p->fd[1]);
  p->fd[1] = -1;
  p->connecting = 0;
  p->refused = 1;
  ssize_t n = write(p->fd[0], refused_reply, refused_len);
  (void)n;
  shutdown(p->fd[0], SHUT_WR);
  rearm(p);
}

/* A refused pair: discards input; -1 once the caller is gone. */
static int drain(struct pair *p) {
  for (;;) {
    ssize_t n = read(p->fd[0], p->buf[0], BUF);
    if (n > 0) continue;
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
    return -1;
  }
}

static void accept_one(void) {
  if (pairs >= max_pairs) {
    set_accepting(0); /* until a connection ends */
    return;
  }
  int c = accept4(LISTEN_FD, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (c < 0) {
    /* Out of descriptors with none of ours to free: stop polling until one ends. */
    if ((errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) && pairs > 0) set_accepting(0);
    return;
  }
  int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s < 0) {
    close(c);
    if (pairs > 0) set_accepting(0);
    return;
  }
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int r = connect(s, (struct sockaddr *)&target, sizeof target);
  int failed = r < 0 && errno != EINPROGRESS; /* refused: not listening yet */
  struct pair *p = calloc(1, sizeof *p);
  if (!p) die("out of memory");
  p->fd[0] = c;
  p->fd[1] = s;
  p->connecting = r < 0;
  for (int i = 0; i < 2; i++) {
    p->buf[i] = malloc(BUF);
    p->tag[i] = malloc(sizeof(struct side));
    if (!p->buf[i] || !p->tag[i]) die("out of memory");
    p->tag[i]->p = p;
    p->tag[i]->i = i;
    struct epoll_event ev = {.events = 0, .data.ptr = p->tag[i]};
    epoll_ctl(epfd, EPOLL_CTL_ADD, p->fd[i], &ev);
  }
  pairs++;
  if (failed) {
    refuse(p);
    return;
  }
  if (!p->connecting && pump(p) < 0) {
    close_pair(p);
    return;
  }
  rearm(p);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: shoal-port-bridge PORT PROGRAM [ARGS...]\n");
    return 125;
  }
  char *end;
  long port = strtol(argv[1], &end, 10);
  if (*end != '\0' || port < 1 || port > 65535) {
    fprintf(stderr, "shoal-port-bridge: bad port %s\n", argv[1]);
    return 125;
  }
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY) {
    long fit = ((long)nofile.rlim_cur - 16) / 2; /* two descriptors a connection, a few of our own */
    if (fit < max_pairs) max_pairs = fit < 1 ? 1 : (int)fit;
  }
  char body[256];
  int blen = snprintf(body, sizeof body, "{\"error\":{\"code\":\"bad-gateway\",\"message\":\"nothing listens on 127.0.0.1:%ld inside the instance ($PORT)\"}}", port);
  refused_len = (size_t)snprintf(refused_reply, sizeof refused_reply,
                                 "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s", blen, body);
  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  target.sin_port = htons((unsigned short)port);
  target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

  int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD};
  sigset_t mask, old;
  sigemptyset(&mask);
  for (size_t k = 0; k < sizeof sigs / sizeof *sigs; k++) sigaddset(&mask, sigs[k]);
  if (sigprocmask(SIG_BLOCK, &mask, &old) < 0) die("sigprocmask");
  signal(SIGPIPE, SIG_IGN);

  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGPIPE, SIG_DFL);
    close(LISTEN_FD);
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    unsetenv("LISTEN_PID");
    execvp(argv[2], argv + 2);
    fprintf(stderr, "shoal-port-bridge: exec %s: %s\n", argv[2], strerror(errno));
    _exit(127);
  }

  /* The program's other descriptors are the program's: holding a copy would keep them open
   * after it closed them (a stream whose reader waits for the end, as the vm driver's). */
  if (close_range(LISTEN_FD + 1, ~0U, 0) < 0)
    for (int fd = LISTEN_FD + 1; fd < 1024; fd++) close(fd);

  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) die("signalfd");
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");
  nonblock(LISTEN_FD);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, LISTEN_FD, &ev) < 0) die("listening socket at fd 3");
  static struct side sigtag;
  ev.data.ptr = &sigtag;
  epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);

  struct epoll_event events[64];
  for (;;) {
    int n = epoll_wait(epfd, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int k = 0; k < n; k++) {
      struct side *s = events[k].data.ptr;
      if (s == NULL) {
        accept_one();
      } else if (s == &sigtag) {
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == sizeof si) {
          if (si.ssi_signo != SIGCHLD) {
            kill(child, (int)si.ssi_signo);
            continue;
          }
          int status;
          pid_t w;
          while ((w = waitpid(-1, &status, WNOHANG)) > 0) {
            if (w != child) continue;
            if (WIFEXITED(status)) exit(WEXITSTATUS(status));
            int sig = WTERMSIG(status);
            sigprocmask(SIG_SETMASK, &old, NULL);
            signal(sig, SIG_DFL);
            raise(sig); /* ignored when we are a namespace's init: then 128+N */
            exit(128 + sig);
          }
        }
      } else {
        struct pair *p = s->p;
        if (p->dead) continue;
        if ((events[k].events & EPOLLERR) && !(s->i == 1 && p->connecting)) { /* a failed connect is refuse()d below */
          close_pair(p);
          continue;
        }
        if (p->refused) {
          if (drain(p) < 0) close_pair(p);
          continue;
        }
        if (s->i == 1 && p->connecting) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(p->fd[1], SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {
            refuse(p);
            continue;
          }
          p->connecting = 0;
        }
        if (pump(p) < 0) close_pair(p);
        else rearm(p);
      }
    }
    free_dead();
  }
}
