//go:build tools

// Package tools names the one program this wrapper module builds.
package tools

import _ "github.com/kserve/kserve/cmd/agent"
