module github.com/iscsikit/iscsikit

go 1.26.0

require github.com/stretchr/testify v1.12.1

require github.com/google/gofuzz v1.2.0

require golang.org/x/crypto v0.59.0

require github.com/ceph/go-ceph v0.38.0

require github.com/coder/websocket v1.8.15

require (
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.50.0
)
