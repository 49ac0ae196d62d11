//go:build !linux

package resources

import "os"

func startWriteback(*os.File) {}
