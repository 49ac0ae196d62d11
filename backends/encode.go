package backends

import (
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"
)

// RegisterFormats are the value formats `herald register` writes on etcd and ZooKeeper.
var RegisterFormats = []string{FormatHerald, FormatHostPort, FormatCurator}

// heraldValue is herald's own instance format, which every herald reader parses.
type heraldValue struct {
	Name    string            `json:"name"`
	ID      string            `json:"id"`
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Tags    []string          `json:"tags"`
	Meta    map[string]string `json:"meta"`
	Status  string            `json:"status"`
}

// curatorValue is Apache Curator's ServiceInstance as its JsonInstanceSerializer writes
// it (payload null: readers with a Void payload type accept it).
type curatorValue struct {
	Name                string          `json:"name"`
	ID                  string          `json:"id"`
	Address             string          `json:"address"`
	Port                int             `json:"port"`
	SSLPort             *int            `json:"sslPort"`
	Payload             json.RawMessage `json:"payload"`
	RegistrationTimeUTC int64           `json:"registrationTimeUTC"`
	ServiceType         string          `json:"serviceType"`
	URISpec             *string         `json:"uriSpec"`
	Enabled             bool            `json:"enabled"`
}

// EncodeRegistration returns the node ID and value a registration of svc writes in
// format, for readers other than herald:
//
//   - herald: herald's JSON under svc.ID
//   - hostport: the value "host:port" (confd and registrator consumers) under svc.ID;
//     on ZooKeeper (byNodeName) the node is named host:port, zc.zk's rule, with zc.zk's
//     {"pid":N} data
//   - curator: Curator's ServiceInstance JSON under a UUID derived from svc.ID (stable,
//     so a restarted herald takes its own node back), as Curator's ServiceDiscovery
//     reads it; tags and meta have no place there and are not written
func EncodeRegistration(svc Service, format string, byNodeName bool, pid int) (id string, value []byte, err error) {
	switch format {
	case "", FormatHerald:
		v := heraldValue{Name: svc.Name, ID: svc.ID, Address: svc.Address, Port: svc.Port, Tags: svc.Tags, Meta: svc.Meta, Status: svc.Status}
		if v.Tags == nil {
			v.Tags = []string{}
		}
		if v.Meta == nil {
			v.Meta = map[string]string{}
		}
		if v.Status == "" {
			v.Status = StatusPassing
		}
		value, err = json.Marshal(v)
		return svc.ID, value, err
	case FormatHostPort:
		hp := net.JoinHostPort(svc.Address, strconv.Itoa(svc.Port))
		if byNodeName {
			// zc.zk's consumers split the node name at ':'; IPv6 stays unbracketed as
			// zc.zk writes it.
			value, err = json.Marshal(map[string]int{"pid": pid})
			return svc.Address + ":" + strconv.Itoa(svc.Port), value, err
		}
		return svc.ID, []byte(hp), nil
	case FormatCurator:
		uuid := stableUUID(svc.Name + "/" + svc.ID)
		value, err = json.Marshal(curatorValue{
			Name: svc.Name, ID: uuid, Address: svc.Address, Port: svc.Port,
			Payload: json.RawMessage("null"), RegistrationTimeUTC: time.Now().UnixMilli(),
			ServiceType: "DYNAMIC", Enabled: true,
		})
		return uuid, value, err
	}
	return "", nil, fmt.Errorf("format %q: want herald, hostport or curator", format)
}

// stableUUID is a name-based (version 5 style) UUID of s.
func stableUUID(s string) string {
	h := sha1.Sum([]byte("herald:" + s))
	h[6] = h[6]&0x0f | 0x50
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}
