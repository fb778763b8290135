//go:build tools

// Package tools pins the ytt command so that `go build carvel.dev/ytt/cmd/ytt` in this module builds the version in
// go.mod. deploy/tkg/build-ytt.sh does that into the repository's ignored bin/ folder.
package tools

import _ "carvel.dev/ytt/cmd/ytt"
