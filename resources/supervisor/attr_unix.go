//go:build unix && !linux

package supervisor

import "syscall"

// childAttr puts the child in its own process group. There is no parent-death signal
// outside Linux: a child outlives a herald that was SIGKILLed.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
