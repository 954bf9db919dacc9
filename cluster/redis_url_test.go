package cluster

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestNewRedisClient(t *testing.T) {
	cases := []struct {
		url  string
		want string // the client's type, or "" for an error
	}{
		{"redis://127.0.0.1:6379/0", "*redis.Client"},
		{"rediss://user:pw@redis.example:6380/2", "*redis.Client"},
		{"redis://s1:26379?master_name=mymaster&addr=s2:26379", "*redis.Client"},
		{"redis://n1:7000?addr=n2:7000&addr=n3:7000", "*redis.ClusterClient"},
		{"http://127.0.0.1:6379", ""},
		{"redis://127.0.0.1:6379?bogus=1", ""},
		{"::not a url", ""},
	}
	for _, c := range cases {
		client, err := NewRedisClient(c.url)
		if c.want == "" {
			if err == nil {
				_ = client.Close()
				t.Errorf("%s: no error", c.url)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.url, err)
			continue
		}
		got := ""
		switch client.(type) {
		case *redis.Client:
			got = "*redis.Client"
		case *redis.ClusterClient:
			got = "*redis.ClusterClient"
		}
		if got != c.want {
			t.Errorf("%s: client %T, want %s", c.url, client, c.want)
		}
		_ = client.Close()
	}
}
