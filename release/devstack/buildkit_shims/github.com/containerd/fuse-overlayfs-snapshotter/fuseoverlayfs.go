// Package fuseoverlayfs is a stand-in for github.com/containerd/fuse-overlayfs-snapshotter (not packaged in
// Debian): the snapshotter is reported unavailable, so buildkitd's `auto` choice falls back to overlayfs or native.
package fuseoverlayfs

import (
	"errors"

	"github.com/containerd/containerd/snapshots"
)

// ErrUnavailable says this build of buildkitd has no fuse-overlayfs snapshotter.
var ErrUnavailable = errors.New("fuse-overlayfs snapshotter is not built into this buildkitd (Debian build)")

// SnapshotterConfig is the (empty) configuration of the snapshotter.
type SnapshotterConfig struct{}

// Opt configures the snapshotter.
type Opt func(config *SnapshotterConfig) error

// Supported always reports the snapshotter unavailable.
func Supported(root string) error {
	return ErrUnavailable
}

// NewSnapshotter always fails: the snapshotter is unavailable.
func NewSnapshotter(root string, opts ...Opt) (snapshots.Snapshotter, error) {
	return nil, ErrUnavailable
}
