package truenas

import (
	"context"
	"encoding/json"
	"os"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Service is the iSCSI service as service.control drives it: serving or
// not serving the portals.
type Service interface {
	// Running reports whether the portals are served.
	Running() bool
	// Start serves the portals; Stop closes them and ends the sessions.
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// portals is the Service of a Manager: its portal listeners.
type portals struct{ m *mgmt.Manager }

func (p portals) Running() bool                   { return p.m.PortalsServed() }
func (p portals) Start(ctx context.Context) error { return p.m.ServePortals(ctx, true) }
func (p portals) Stop(ctx context.Context) error  { return p.m.ServePortals(ctx, false) }

// service returns the Service service.* drive.
func (s *Server) service() Service {
	if s.opt.Service != nil {
		return s.opt.Service
	}
	return portals{s.m}
}

// serviceName is the middleware's name of the iSCSI service.
const serviceName = "iscsitarget"

// serviceMethods are service.query, service.update and service.control
// for the one service iscsid runs.
func (s *Server) serviceMethods() map[string]jsonrpc.Method {
	return map[string]jsonrpc.Method{
		"service.query":   s.serviceQuery,
		"service.update":  s.serviceUpdate,
		"service.control": s.serviceControl,
	}
}

func (s *Server) running() bool { return s.service().Running() }

func (s *Server) serviceQuery(_ context.Context, params json.RawMessage) (any, error) {
	state := "STOPPED"
	pids := []int{}
	if s.running() {
		state, pids = "RUNNING", []int{os.Getpid()}
	}
	list := []map[string]any{{"id": 1, "service": serviceName, "enable": true, "state": state, "pids": pids}}
	return query(params, list, "service")
}

// serviceArg reads the service name (or id 1) that service.update and
// service.control take first.
func serviceArg(args []json.RawMessage) error {
	if len(args) == 0 {
		return jsonrpc.InvalidParams("the first parameter names the service, %q", serviceName)
	}
	var name string
	var id int
	if json.Unmarshal(args[0], &name) == nil && name == serviceName || json.Unmarshal(args[0], &id) == nil && id == 1 {
		return nil
	}
	return errorf(errENOENT, "service %s does not exist: this server runs %q only", args[0], serviceName)
}

// serviceUpdate takes {"enable": true}: iscsid serves its portals from
// start, so enable cannot be turned off.
func (s *Server) serviceUpdate(_ context.Context, params json.RawMessage) (any, error) {
	args, err := atMost(params, 2)
	if err != nil {
		return nil, err
	}
	if err := serviceArg(args); err != nil {
		return nil, err
	}
	var upd struct {
		Enable *bool `json:"enable"`
	}
	if len(args) != 2 {
		return nil, jsonrpc.InvalidParams("service.update takes the service and {\"enable\": true}")
	}
	if err := jsonrpc.Decode(args[1], "service_update", &upd); err != nil {
		return nil, err
	}
	if upd.Enable != nil && !*upd.Enable {
		return nil, errorf(errENOTSUP, "%s: iscsid always serves its portals when it starts; enable cannot be false", serviceName)
	}
	return 1, nil
}

// serviceControl is service.control(service, START|STOP|RESTART|RELOAD).
func (s *Server) serviceControl(ctx context.Context, params json.RawMessage) (any, error) {
	args, err := atMost(params, 3)
	if err != nil {
		return nil, err
	}
	var verb string
	if err := decodeArg(args, 0, "verb", &verb); err != nil {
		return nil, err
	}
	if err := serviceArg(args[1:]); err != nil {
		// midclt and the seed pass the service first; accept both orders.
		if err2 := serviceArg(args); err2 != nil {
			return nil, err
		}
		if err := decodeArg(args, 1, "verb", &verb); err != nil {
			return nil, err
		}
	}
	svc := s.service()
	switch verb {
	case "START", "RELOAD":
		if !svc.Running() {
			if err := svc.Start(ctx); err != nil {
				return nil, err
			}
		}
		return true, nil
	case "STOP", "RESTART":
		if err := svc.Stop(ctx); err != nil {
			return nil, err
		}
		if verb == "RESTART" {
			if err := svc.Start(ctx); err != nil {
				return nil, err
			}
		}
		return true, nil
	}
	return nil, jsonrpc.InvalidParams("verb: %q is not START, STOP, RESTART or RELOAD", verb)
}
