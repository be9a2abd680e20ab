// A wrapper module that builds KServe's agent (cmd/agent) from the Go module proxy for the
// benchmark. `go install github.com/kserve/kserve/cmd/agent@v0.17.0` is refused because
// kserve's go.mod has replace directives; bench/tools.py copies this module to the build
// cache, appends those replace lines read from the downloaded go.mod, and builds there.
module modelserving.local/bench/kserve-agent

go 1.26

require github.com/kserve/kserve v0.17.0
