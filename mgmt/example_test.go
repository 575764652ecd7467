package mgmt_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Drive the management facade programmatically: a portal, a target, a
// file extent and the LUN map that joins them, applied live to a running
// server, as a product's own API or UI would.
func ExampleNew() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "mgmt-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	srv, err := iscsi.NewServer(iscsi.Options{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	// Store nil keeps the configuration in memory; mgmt.FileStore{Dir: dir}
	// would keep it in dir/config.json across restarts.
	m, err := mgmt.New(ctx, mgmt.Options{Server: srv, Initial: &mgmt.Config{Global: mgmt.Global{Basename: "iqn.2026-11.com.example"}}})
	if err != nil {
		panic(err)
	}
	defer m.Close()

	portal := mgmt.NewPortal()
	portal.Listen = []mgmt.Listen{{IP: "127.0.0.1", Port: 0}} // 0: a free port
	portal, err = m.CreatePortal(ctx, portal)
	if err != nil {
		panic(err)
	}
	target := mgmt.NewTarget()
	target.Name = "disk0"
	target.Groups = []mgmt.TargetGroup{{Portal: portal.ID, AuthMethod: "NONE"}}
	if target, err = m.CreateTarget(ctx, target); err != nil {
		panic(err)
	}
	extent := mgmt.NewExtent()
	extent.Name, extent.Type = "disk0", "FILE"
	extent.Path, extent.Filesize = filepath.Join(dir, "disk0.img"), 16<<20
	if extent, err = m.CreateExtent(ctx, extent); err != nil {
		panic(err)
	}
	if _, err := m.CreateTargetExtent(ctx, mgmt.TargetExtent{Target: target.ID, Extent: extent.ID, LunID: 0}); err != nil {
		panic(err)
	}
	fmt.Println("serving:", srv.Targets())

	// A bad request is refused with an error naming the object and field.
	bad := mgmt.NewExtent()
	bad.Name, bad.Type, bad.Path, bad.Blocksize = "disk1", "FILE", filepath.Join(dir, "disk1.img"), 1000
	_, err = m.CreateExtent(ctx, bad)
	fmt.Println("refused:", err != nil)

	// What an initiator sees through the portal.
	addr := m.PortalAddrs(portal.ID)[0].String()
	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: "iqn.2026-11.com.example:disk0"})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	luns, err := c.ReportLUNs(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("LUNs:", luns)
	// Output:
	// serving: [iqn.2026-11.com.example:disk0]
	// refused: true
	// LUNs: [0]
}
