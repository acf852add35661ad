/*
 * pause: the sandbox ("infra") process of a pod, a local stand-in for registry.k8s.io/pause.
 * It holds the pod's namespaces and does nothing else: sleeps in pause(), exits 0 on SIGTERM or
 * SIGINT, and reaps every child it inherits (it is PID 1 of the pod's PID namespace when the
 * pod shares one). Built by scripts/build-fleet-images: gcc -static -Os -s pause.c.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_down(int signo)
{
    (void)signo;
    _exit(0);
}

static void on_child(int signo)
{
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv)
{
    struct sigaction down = {.sa_handler = on_down};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};

    if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
        static const char version[] = "pause (clusterset-fleet) 3.10\n";
        return write(STDOUT_FILENO, version, sizeof version - 1) < 0;
    }
    if (getpid() != 1) {
        static const char warning[] = "Warning: pause should be the first process\n";
        if (write(STDERR_FILENO, warning, sizeof warning - 1) < 0) {
            /* nothing to do */
        }
    }
    if (sigaction(SIGINT, &down, NULL) < 0 || sigaction(SIGTERM, &down, NULL) < 0)
        return 1;
    if (sigaction(SIGCHLD, &child, NULL) < 0)
        return 2;
    for (;;)
        pause();
}
