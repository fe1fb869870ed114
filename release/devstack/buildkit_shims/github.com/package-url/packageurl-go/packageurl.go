// Package packageurl is a small stand-in for github.com/package-url/packageurl-go (not packaged in Debian):
// the package URL type BuildKit uses for provenance subjects, built, printed and parsed per the purl spec.
package packageurl

import (
	"errors"
	"net/url"
	"sort"
	"strings"
)

// Package types BuildKit uses.
const (
	TypeDocker = "docker"
	TypeOCI    = "oci"
)

// Qualifier is one key=value pair of a package URL.
type Qualifier struct {
	Key   string
	Value string
}

// Qualifiers is the ordered list of a package URL's qualifiers.
type Qualifiers []Qualifier

// Map returns the qualifiers as a map.
func (qs Qualifiers) Map() map[string]string {
	m := make(map[string]string, len(qs))
	for _, q := range qs {
		m[q.Key] = q.Value
	}
	return m
}

// String returns the qualifiers sorted by key, values escaped, joined by '&'.
func (qs Qualifiers) String() string {
	sorted := append(Qualifiers(nil), qs...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Key < sorted[j].Key })
	parts := make([]string, 0, len(sorted))
	for _, q := range sorted {
		if q.Value == "" {
			continue
		}
		parts = append(parts, q.Key+"="+url.QueryEscape(q.Value))
	}
	return strings.Join(parts, "&")
}

// PackageURL is a parsed package URL.
type PackageURL struct {
	Type       string
	Namespace  string
	Name       string
	Version    string
	Qualifiers Qualifiers
	Subpath    string
}

// NewPackageURL returns a package URL of the given parts.
func NewPackageURL(purlType, namespace, name, version string, qualifiers Qualifiers, subpath string) *PackageURL {
	return &PackageURL{
		Type:       purlType,
		Namespace:  namespace,
		Name:       name,
		Version:    version,
		Qualifiers: qualifiers,
		Subpath:    subpath,
	}
}

// ToString returns the canonical text form, e.g. pkg:docker/library/alpine@3.19?platform=linux%2Famd64.
func (p *PackageURL) ToString() string {
	var b strings.Builder
	b.WriteString("pkg:")
	b.WriteString(strings.ToLower(p.Type))
	b.WriteString("/")
	for _, segment := range strings.Split(p.Namespace, "/") {
		if segment != "" {
			b.WriteString(url.PathEscape(segment))
			b.WriteString("/")
		}
	}
	b.WriteString(url.PathEscape(p.Name))
	if p.Version != "" {
		b.WriteString("@")
		b.WriteString(url.PathEscape(p.Version))
	}
	if q := p.Qualifiers.String(); q != "" {
		b.WriteString("?")
		b.WriteString(q)
	}
	if p.Subpath != "" {
		b.WriteString("#")
		b.WriteString(strings.Trim(p.Subpath, "/"))
	}
	return b.String()
}

// String returns the same as ToString.
func (p PackageURL) String() string {
	return p.ToString()
}

// FromString parses a package URL.
func FromString(purl string) (PackageURL, error) {
	rest, ok := strings.CutPrefix(purl, "pkg:")
	if !ok {
		return PackageURL{}, errors.New("purl scheme is not \"pkg\": " + purl)
	}
	rest = strings.TrimLeft(rest, "/")
	var p PackageURL
	if i := strings.Index(rest, "#"); i >= 0 {
		p.Subpath = strings.Trim(rest[i+1:], "/")
		rest = rest[:i]
	}
	if i := strings.Index(rest, "?"); i >= 0 {
		values, err := url.ParseQuery(rest[i+1:])
		if err != nil {
			return PackageURL{}, err
		}
		keys := make([]string, 0, len(values))
		for key := range values {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			p.Qualifiers = append(p.Qualifiers, Qualifier{Key: strings.ToLower(key), Value: values.Get(key)})
		}
		rest = rest[:i]
	}
	typ, path, ok := strings.Cut(rest, "/")
	if !ok || typ == "" {
		return PackageURL{}, errors.New("purl is missing a type or a name: " + purl)
	}
	p.Type = strings.ToLower(typ)
	path = strings.Trim(path, "/")
	if i := strings.LastIndex(path, "@"); i >= 0 {
		version, err := url.PathUnescape(path[i+1:])
		if err != nil {
			return PackageURL{}, err
		}
		p.Version = version
		path = path[:i]
	}
	segments := strings.Split(path, "/")
	for i, segment := range segments {
		unescaped, err := url.PathUnescape(segment)
		if err != nil {
			return PackageURL{}, err
		}
		segments[i] = unescaped
	}
	p.Name = segments[len(segments)-1]
	if p.Name == "" {
		return PackageURL{}, errors.New("purl has an empty name: " + purl)
	}
	p.Namespace = strings.Join(segments[:len(segments)-1], "/")
	return p, nil
}
