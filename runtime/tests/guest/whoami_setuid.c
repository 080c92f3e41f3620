/*
 * Says who it runs as: "ruid R euid E nnp N" (N: no_new_privs). The e2e
 * test makes it setuid root and runs it as nobody, natively and inside.
 */
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void)
{
    printf("ruid %d euid %d nnp %d\n", (int)getuid(), (int)geteuid(),
           prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    return 0;
}
