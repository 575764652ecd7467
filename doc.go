// Package iscsikit is a Go SDK for embedding an iSCSI target in storage
// products.
//
// The SDK is a set of packages, each with one job, layered so that each
// depends only on the ones below it:
//
//	iscsi    RFC 7143 transport: PDU codec (iscsi/pdu), text-key negotiation
//	         (iscsi/negotiate), login, discovery and normal sessions, and Server
//	scsi     SAM/SPC/SBC command set over a block device; knows nothing of iSCSI
//	backend  the block device interface and its file, block-device and memory
//	         implementations; knows nothing of SCSI
//	chap     CHAP (RFC 1994, RFC 7143 §12.1.3) as pure functions, used by iscsi
//	mgmt     the management facade: portals, initiator groups, CHAP users,
//	         targets, extents and LUN maps, validated, persisted and applied live
//
// A product hands the SDK block devices and gets a target that initiators
// (Linux open-iscsi, VMware ESXi, Windows, QEMU/libiscsi) log in to:
//
//	dev, err := backend.OpenFile("/srv/lun0.img", backend.FileOptions{Size: 1 << 30, Create: true})
//	if err != nil {
//		return err
//	}
//	lu, err := scsi.NewLogicalUnit(dev, scsi.UnitConfig{BlockSize: 512, Serial: "lun0"})
//	if err != nil {
//		return err
//	}
//	luns := scsi.NewTarget()
//	if err := luns.Attach(0, lu); err != nil {
//		return err
//	}
//	srv, err := iscsi.NewServer(iscsi.Options{Logger: slog.Default()})
//	if err != nil {
//		return err
//	}
//	if err := srv.AddTarget(&iscsi.Target{Name: "iqn.2026-11.com.example:lun0", Device: luns}); err != nil {
//		return err
//	}
//	go srv.ListenAndServe("0.0.0.0:3260")
//	// ... on exit:
//	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
//	defer cancel()
//	return srv.Shutdown(ctx)
//
// examples/embed is that program, complete and tested; examples/iscsid is the
// full daemon, with mgmt and the management APIs of five storage products on
// top. The packages' Example functions show the first things an embedder
// does: serve a memory LUN (package iscsi), plug in a custom backend (scsi),
// require CHAP, shut down gracefully, and drive mgmt programmatically.
package iscsikit
