package backends

import (
	"context"
	"errors"
	"time"
)

// ErrTaken is what every backend's refusal to register an instance ID held by another
// process wraps (etcd: a key under another lease; ZooKeeper: another session's znode;
// Consul: a service ID already on the agent), so callers test one error.
var ErrTaken = errors.New("instance ID is registered by another process")

// TakenError returns an error reading msg that errors.Is treats as ErrTaken: a backend's
// refusal in its own words.
func TakenError(msg string) error { return takenError(msg) }

type takenError string

func (e takenError) Error() string        { return string(e) }
func (e takenError) Is(target error) bool { return target == ErrTaken }

// ClaimMargin is added to a dead holder's lease or session length before a refused ID
// is reported as taken: etcd expires leases on a 500 ms tick, ZooKeeper sessions on its
// tick, and the keepalive that renewed it may have been the last thing the holder did.
const ClaimMargin = 3 * time.Second

// RegisterPolicy is what a Registrar declares about its registry, so that the caller
// announcing an instance needs no knowledge of which backend it talks to.
type RegisterPolicy interface {
	// RunsChecks reports that the registry runs HTTP and TCP health checks itself, given
	// as RegisterOptions.CheckHTTP / CheckTCP (Consul's agent), instead of the caller.
	RunsChecks() bool
	// ClaimWait is how long a Register with opts that was refused with ErrTaken is worth
	// retrying: long enough for the entry of a killed holder to expire. 0: the refusal is
	// final at once.
	ClaimWait(opts RegisterOptions) time.Duration
	// Abandoned reports whether the entry holding svc's ID was left by a process that is
	// gone, so that it may be taken over (as with Replace) before ClaimWait ends. A
	// registry that cannot tell answers false.
	Abandoned(ctx context.Context, svc Service, opts RegisterOptions) (bool, error)
}
