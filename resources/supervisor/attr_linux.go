package supervisor

import "syscall"

// childAttr puts the child in its own process group and has the kernel send it SIGTERM
// if herald dies.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
