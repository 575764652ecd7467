package truenas

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
)

// restResources are the objects of the REST twin, /api/v2.0/iscsi/NAME.
var restResources = map[string]bool{"portal": true, "initiator": true, "auth": true, "target": true, "extent": true, "targetextent": true}

// restHandler serves /api/v2.0/iscsi/...: GET lists (or, with /id/N,
// gets), POST creates, PUT /id/N updates, DELETE /id/N deletes, and
// global takes GET and PUT. Each request is the call of the same name
// (iscsi.portal.create...), with the body as its object parameter.
func (s *Server) restHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !notFromOtherSite(w, r) {
			return
		}
		rest := strings.TrimPrefix(r.URL.Path, RESTPrefix+"iscsi/")
		parts := strings.Split(strings.Trim(rest, "/"), "/")
		name := parts[0]
		var id int
		hasID := false
		if len(parts) == 3 && parts[1] == "id" {
			n, err := strconv.Atoi(parts[2])
			if err != nil || n <= 0 {
				restError(w, http.StatusNotFound, "the id must be a positive integer")
				return
			}
			id, hasID = n, true
		} else if len(parts) != 1 {
			restError(w, http.StatusNotFound, "no such resource: "+r.URL.Path)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, jsonrpc.MaxBodyBytes+1))
		if err != nil || len(body) > jsonrpc.MaxBodyBytes {
			restError(w, http.StatusRequestEntityTooLarge, "the body is larger than 1 MiB")
			return
		}
		var method string
		var args []json.RawMessage
		idArg := json.RawMessage(strconv.Itoa(id))
		switch {
		case name == "global" && !hasID && r.Method == http.MethodGet:
			method = "iscsi.global.config"
		case name == "global" && !hasID && r.Method == http.MethodPut:
			method, args = "iscsi.global.update", []json.RawMessage{body}
		case !restResources[name]:
			restError(w, http.StatusNotFound, "no such resource: "+r.URL.Path)
			return
		case r.Method == http.MethodGet && !hasID:
			method = "iscsi." + name + ".query"
		case r.Method == http.MethodGet:
			method, args = "iscsi."+name+".query", []json.RawMessage{json.RawMessage(`[["id","=",` + string(idArg) + `]]`), json.RawMessage(`{"get":true}`)}
		case r.Method == http.MethodPost && !hasID:
			method, args = "iscsi."+name+".create", []json.RawMessage{body}
		case r.Method == http.MethodPut && hasID:
			method, args = "iscsi."+name+".update", []json.RawMessage{idArg, body}
		case r.Method == http.MethodDelete && hasID:
			method, args = "iscsi."+name+".delete", []json.RawMessage{idArg}
			if b := strings.TrimSpace(string(body)); b != "" {
				args = append(args, body)
			}
		default:
			w.Header().Set("Allow", "GET, POST, PUT, DELETE")
			restError(w, http.StatusMethodNotAllowed, r.Method+" is not served on "+r.URL.Path)
			return
		}
		if len(args) > 0 && !json.Valid(args[len(args)-1]) {
			restError(w, http.StatusBadRequest, "the body is not valid JSON")
			return
		}
		params, _ := json.Marshal(args)
		// HTTP authentication in front of the handler admitted the request.
		ss := &session{srv: s, authed: true, subs: map[string]string{}, event: func(string, string, any, any) {}}
		res, e := s.invoke(r.Context(), ss, nil, method, params)
		w.Header().Set("Content-Type", "application/json")
		if e != nil {
			status := http.StatusInternalServerError
			errno, _, _ := errorFields(e)
			switch {
			case e.Code == jsonrpc.CodeInvalidParams:
				status = http.StatusUnprocessableEntity
			case errno == errENOENT:
				status = http.StatusNotFound
			case errno == errEEXIST || errno == errEBUSY:
				status = http.StatusConflict
			case errno == errENOTSUP:
				status = http.StatusUnprocessableEntity
			}
			w.WriteHeader(status)
			json.NewEncoder(w).Encode(map[string]any{"message": e.Message, "error": e.Data})
			return
		}
		json.NewEncoder(w).Encode(res)
	})
}

func restError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"message": msg})
}
