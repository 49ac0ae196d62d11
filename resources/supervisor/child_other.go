//go:build !unix

package supervisor

// Unsupported says why herald exec cannot run here: it forwards POSIX signals, stops a
// child's whole process group and, as PID 1, reaps orphans.
const Unsupported = "herald exec is not supported on this platform: it needs POSIX signals and process groups"
