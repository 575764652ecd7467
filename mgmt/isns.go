package mgmt

import (
	"context"
	"os"
	"slices"
	"time"

	"github.com/iscsikit/iscsikit/iscsi/isns"
)

// isnsLink is the applier's iSNS client: made for Global.ISNSServers,
// fed every applied change.
type isnsLink struct {
	// entity is the network entity ID (Options.ISNSEntityID).
	entity string
	// servers and domain are what client was made for.
	servers []string
	domain  string
	client  *isns.Client
}

// isnsCloseTimeout bounds the deregistration at shutdown and when the
// servers change.
const isnsCloseTimeout = 10 * time.Second

// defaultISNSEntity is the entity ID without Options.ISNSEntityID: one
// per host.
func defaultISNSEntity() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return "iscsikit:" + host
}

// syncISNS hands the targets and portals now served to the iSNS client,
// making it anew when the servers changed. It never waits for a server:
// the client works in the background, and an old client deregisters in
// the background too.
func (a *applier) syncISNS(cfg *Config) {
	if a.srv == nil {
		return
	}
	var servers []string
	for _, s := range cfg.Global.ISNSServers {
		if addr, err := isns.ServerAddress(s); err == nil && !slices.Contains(servers, addr) {
			servers = append(servers, addr)
		}
	}
	l := &a.isns
	if !slices.Equal(servers, l.servers) || cfg.Global.ISNSDiscoveryDomain != l.domain {
		if old := l.client; old != nil {
			// The new client takes the registration over on the servers
			// it shares with the old one; the others are told to forget
			// it, in the background.
			old.Stop()
			var dropped []string
			for _, s := range l.servers {
				if !slices.Contains(servers, s) {
					dropped = append(dropped, s)
				}
			}
			if len(dropped) > 0 {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), isnsCloseTimeout)
					defer cancel()
					if err := old.Deregister(ctx, dropped...); err != nil {
						a.log.Warn("iSNS deregistration failed", "err", err)
					}
				}()
			}
		}
		l.client, l.servers, l.domain = nil, servers, cfg.Global.ISNSDiscoveryDomain
		if len(servers) > 0 {
			entity := l.entity
			if entity == "" {
				entity = defaultISNSEntity()
			}
			c, err := isns.NewClient(isns.Options{Servers: servers, EntityID: entity, DiscoveryDomain: l.domain, Logger: a.log})
			if err != nil {
				a.log.Error("starting the iSNS client failed", "err", err)
				return
			}
			l.client = c
		}
	}
	if l.client == nil {
		return
	}
	var reg isns.Registration
	for addr, ll := range a.listeners {
		reg.Portals = append(reg.Portals, isns.Portal{Addr: addr, Tag: ll.tag})
	}
	slices.SortFunc(reg.Portals, func(x, y isns.Portal) int { return x.Addr.Compare(y.Addr) })
	for _, t := range cfg.Targets {
		lt := a.targets[t.ID]
		if lt == nil {
			continue
		}
		reg.Targets = append(reg.Targets, isns.Target{Name: lt.name, Alias: lt.alias, PortalGroups: lt.groups})
	}
	l.client.Update(reg)
}

// closeISNS deregisters from the iSNS servers, within isnsCloseTimeout.
func (a *applier) closeISNS() {
	if c := a.isns.client; c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), isnsCloseTimeout)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			a.log.Warn("iSNS deregistration failed", "err", err)
		}
		a.isns = isnsLink{entity: a.isns.entity}
	}
}

// validISNSServer checks one entry of Global.ISNSServers.
func validISNSServer(s string) error {
	_, err := isns.ServerAddress(s)
	return err
}
