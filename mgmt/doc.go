// Package mgmt is the management facade of iscsikit: one model of portals,
// initiator groups, CHAP auth groups, targets, extents and target-extent
// (LUN) maps that every management API a storage product exposes can be
// served from, validated, persisted and applied live to a running
// iscsi.Server.
//
// # The model
//
// Objects and field names follow seed 000 (TrueNAS iscsi.* calls), so a
// front-end for that API is a thin adapter, and the configuration file is
// written by hand the same way:
//
//	{
//	  "version": 1,
//	  "global": {"basename": "iqn.2026-11.io.example"},
//	  "portals": [{"id": 1, "tag": 1, "listen": [{"ip": "0.0.0.0", "port": 3260}]}],
//	  "initiators": [{"id": 1, "initiators": [], "auth_network": ["192.168.1.0/24"]}],
//	  "auths": [],
//	  "targets": [{"id": 1, "name": "disk0", "groups": [{"portal": 1, "initiator": 1}]}],
//	  "extents": [{"id": 1, "name": "lun0", "type": "FILE", "path": "/srv/iscsi/lun0.img",
//	               "filesize": 1073741824, "blocksize": 512}],
//	  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
//	}
//
// Target "disk0" is served as basename + ":disk0" (a name that is already
// an iqn., eui. or naa. name is used as is). Fields left out take the
// defaults of a create call (NewTarget, NewExtent, NewPortal).
//
// Extensions beyond seed 000, for the other seeds: extents carry
// write_cache, online, removable and thin (seed 003 and 004 LUN settings),
// direct (O_DIRECT I/O) and vendor, product and revision (seed 004's SCSI identity overrides);
// targets carry state, ready or offline (seed 004).
//
// # Validation and errors
//
// Every change is validated as a whole configuration. Refusals are *Error
// values naming the object, its id and name, the JSON field and the
// reason; their Kind (and errors.Is with ErrInvalid, ErrNotFound,
// ErrExists, ErrInUse, ErrUnsupported) lets a front-end pick an HTTP
// status or JSON-RPC code. Settings that are valid iSCSI but not yet
// implemented here (CHAP, iSNS, ALUA, Fibre Channel, removable media,
// XCOPY) are refused as ErrUnsupported rather than accepted and ignored.
//
// # Persistence and live apply
//
// A Store keeps the configuration: FileStore writes DIR/config.json
// crash-safely (temporary file, fsync, rename, directory fsync; mode
// 0600), and a product with its own database implements Store. The
// Manager applies each accepted change to its iscsi.Server touching only
// what differs: new portals start listening, new targets and LUNs appear
// (initiators get REPORTED LUNS DATA HAS CHANGED), removed or offline
// targets end their own sessions only. If a change cannot be applied (a
// file cannot be created, an address is taken), nothing is changed.
package mgmt
