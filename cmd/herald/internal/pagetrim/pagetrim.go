// Package pagetrim lets a long-running herald give back the pages of its own executable
// that only start-up needed.
//
// Starting herald runs the init work of some 200 packages (the etcd, gRPC, protobuf,
// ZooKeeper and Consul clients among them, whichever backend is used), parses flags,
// resource files and templates. That touches most of the executable, and the kernel maps
// every page it touches, plus its neighbours (fault-around, 64 KiB at a time), into the
// process: measured, 16.5 of the 19.4 MB of a release build's text and read-only data
// stay resident for the life of the daemon, most of them never used again. After
// start-up the daemon needs far fewer of them (9.4 MB after 60 changes on Consul).
//
// Executable unmaps those pages from the process (madvise MADV_DONTNEED on its
// read-only, private mappings of the executable). They are clean copies of the file, so
// nothing is lost: they stay in the page cache, where the kernel may reclaim them like
// any cached file, and a page the daemon needs again is mapped back on its next use by
// a minor fault, without I/O while it is cached.
package pagetrim

// Stats is what one call did, in bytes of resident pages.
type Stats struct {
	// Released is what was resident in the mappings given back.
	Released int64
	// Kept is what was resident in read-only mappings of the executable that hold
	// pages of the process's own (a position-independent build's relocated data, made
	// read-only after relocation): those are not copies of the file and stay mapped.
	Kept int64
}
