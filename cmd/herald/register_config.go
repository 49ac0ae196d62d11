package main

// RegisterConfig is one [[register]] table of herald.toml: an instance that `herald
// watch` announces while it runs. Same fields as `herald register` flags.
type RegisterConfig struct {
	Service         string            `toml:"service"`
	ID              string            `toml:"id"`
	Address         string            `toml:"address"`
	Port            int               `toml:"port"`
	Tags            []string          `toml:"tags"`
	Meta            map[string]string `toml:"meta"`
	TTL             string            `toml:"ttl"`
	Check           string            `toml:"check"`
	CheckCmd        string            `toml:"check_cmd"`
	CheckInterval   string            `toml:"check_interval"`
	CheckTimeout    string            `toml:"check_timeout"`
	DeregisterAfter string            `toml:"deregister_after"`
	Replace         bool              `toml:"replace"`
}
