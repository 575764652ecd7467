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
//	  "version": 2,
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
// direct (O_DIRECT I/O) and vendor, product and revision (seed 004's SCSI
// identity overrides); targets carry state, ready or offline (seed 004),
// header_digest and data_digest (seed 002) and queue_depth (seed 001); a
// target group on portal 0 (EveryPortal) reaches every portal (seeds 002
// to 004); auth entries carry initiator, which restricts a credential to
// one initiator, initiator groups a name and LUN maps an initiator_group
// they are masked to (seed 003's per-initiator credentials and access
// groups).
//
// # Security
//
// Auth entries sharing a tag form an auth group (seed 004's incoming users
// are its users, its outgoing user the peer user). A target group with
// authmethod CHAP or MUTUAL_CHAP and auth set to a group's tag makes
// logins through that portal authenticate as one of the group's users;
// MUTUAL_CHAP needs a peeruser and peersecret on every entry of the
// group, and NONE takes no group (it would be ignored) unless the group
// holds only outgoing-only entries (Auth.OutgoingOnly: a peer user and
// no user, tgt's outgoing user kept while there is no incoming one),
// which never serve a CHAP login. A portal's
// discovery_authmethod and discovery_authgroup do the same for discovery
// sessions. Secrets have 12 to 16 characters (MinSecretLen,
// MaxSecretLen): RFC 7143 §9.2.1 asks for at least 96 bits without IPsec,
// and TrueNAS caps them at 16; the chap package itself accepts up to 255.
// The first group of a target whose portal and initiator group admit a
// login decides its auth method; an initiator no group admits gets
// "authorization failure" and does not see the target in discovery.
// A change that narrows an initiator group ends the sessions it no longer
// admits; changed credentials or auth methods apply from the next login.
// Listings hide secrets unless asked for (Query.Secrets).
//
// # Validation and errors
//
// Every change is validated as a whole configuration. Refusals are *Error
// values naming the object, its id and name, the JSON field and the
// reason; their Kind (and errors.Is with ErrInvalid, ErrNotFound,
// ErrExists, ErrInUse, ErrUnsupported) lets a front-end pick an HTTP
// status or JSON-RPC code. Settings that are valid iSCSI but not yet
// implemented here (Fibre Channel) are refused as
// ErrUnsupported rather than accepted and ignored.
//
// # Extent types
//
// Extents are opened by type through a table of Openers given in
// Options.Openers: FILE and DISK by default (DefaultOpeners), and any type
// a product adds (an RBD image, a volume of its own storage service), each
// with its own settings in Extent.Params. An Opener checks its type's
// fields with every validation, so a bad extent is refused at create time
// with the field that is wrong, and names the storage it opens, so that
// two extents never share it. There is no global registry: the table
// belongs to one Manager.
//
// # Persistence and live apply
//
// A Store keeps the configuration: FileStore writes DIR/config.json
// crash-safely (temporary file, fsync, rename, directory fsync; mode
// 0600), and a product with its own database implements Store. The
// Manager applies each accepted change to its iscsi.Server touching only
// what differs: new portals start listening, new targets and LUNs appear
// (initiators get REPORTED LUNS DATA HAS CHANGED), removed or offline
// targets end their own sessions only, and a changed extent's unit is
// reopened in place: its commands in flight finish, new ones wait for
// the swap, and none fails. A change is applied in three steps: what can
// fail (opening storage, draining the units to reopen, listening on new
// addresses, checking target names against the Server), then the save,
// then the live changes, which cannot fail. So if a change cannot be
// applied or saved (a file cannot be created, an address is taken, the
// disk is full), the Server and the Store are as they were: no session
// ended, no LUN dropped.
package mgmt
