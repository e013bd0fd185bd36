// Command floe-pki writes the keys and certificates of a test control plane: a CA, the API
// server's serving certificate, the service-account key pair, an admin client certificate
// (system:masters), and a kubeconfig that embeds them (accepted by kubectl and kube-rs).
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func writePEM(path, typ string, der []byte) {
	must(os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	return k
}

func keyDER(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	must(err)
	return der
}

var serial int64 = 1

func sign(tmpl *x509.Certificate, pub interface{}, parent *x509.Certificate, parentKey interface{}) []byte {
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(7 * 24 * time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	must(err)
	return der
}

func main() {
	dir := flag.String("dir", "", "output directory")
	server := flag.String("server", "", "API server URL for the kubeconfig, e.g. https://127.0.0.1:6443")
	freePorts := flag.Int("free-ports", 0, "print this many free loopback TCP ports and exit")
	extraIPs := flag.String("ips", "", "comma-separated extra IP addresses for the API server's certificate")
	clients := flag.String("clients", "", "comma-separated extra client identities FILE=CN[/ORG]: each gets FILE.crt, FILE.key and kubeconfig-FILE (e.g. node-1=system:node:floe-node-1/system:nodes)")
	flag.Parse()
	if *freePorts > 0 {
		var ls []net.Listener
		for i := 0; i < *freePorts; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			must(err)
			ls = append(ls, l)
			fmt.Println(l.Addr().(*net.TCPAddr).Port)
		}
		for _, l := range ls {
			l.Close()
		}
		return
	}
	if *dir == "" || *server == "" {
		log.Fatal("usage: floe-pki --dir DIR --server URL")
	}
	must(os.MkdirAll(*dir, 0o700))
	p := func(n string) string { return filepath.Join(*dir, n) }

	caKey := newKey()
	caTmpl := &x509.Certificate{
		Subject: pkix.Name{CommonName: "floe-test-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
	}
	caDER := sign(caTmpl, &caKey.PublicKey, nil, caKey)
	ca, err := x509.ParseCertificate(caDER)
	must(err)
	writePEM(p("ca.crt"), "CERTIFICATE", caDER)
	writePEM(p("ca.key"), "EC PRIVATE KEY", keyDER(caKey))

	srvKey := newKey()
	srvDER := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: serverIPs(*extraIPs),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &srvKey.PublicKey, ca, caKey)
	writePEM(p("apiserver.crt"), "CERTIFICATE", srvDER)
	writePEM(p("apiserver.key"), "EC PRIVATE KEY", keyDER(srvKey))

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	writePEM(p("sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey))
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	must(err)
	writePEM(p("sa.pub"), "PUBLIC KEY", saPub)

	admKey := newKey()
	admDER := sign(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "floe-admin", Organization: []string{"system:masters"}},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, &admKey.PublicKey, ca, caKey)
	writePEM(p("admin.crt"), "CERTIFICATE", admDER)
	writePEM(p("admin.key"), "EC PRIVATE KEY", keyDER(admKey))

	b64 := func(path string) string {
		b, err := os.ReadFile(path)
		must(err)
		return base64.StdEncoding.EncodeToString(b)
	}
	writeKubeconfig := func(path, user, crt, key string) {
		kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: floe-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: floe-test
  context:
    cluster: floe-test
    user: %s
    namespace: default
current-context: floe-test
`, *server, b64(p("ca.crt")), user, b64(crt), b64(key), user)
		must(os.WriteFile(path, []byte(kubeconfig), 0o600))
	}
	writeKubeconfig(p("kubeconfig"), "floe-admin", p("admin.crt"), p("admin.key"))

	// extra client identities: kubelets (system:node:NAME in system:nodes), the API server's
	// client certificate for kubelets, add-ons
	for _, c := range strings.Split(*clients, ",") {
		if c == "" {
			continue
		}
		file, id, ok := strings.Cut(c, "=")
		if !ok {
			log.Fatalf("--clients: %q is not FILE=CN[/ORG]", c)
		}
		cn, org, _ := strings.Cut(id, "/")
		subject := pkix.Name{CommonName: cn}
		if org != "" {
			subject.Organization = []string{org}
		}
		k := newKey()
		der := sign(&x509.Certificate{
			Subject:     subject,
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}, &k.PublicKey, ca, caKey)
		writePEM(p(file+".crt"), "CERTIFICATE", der)
		writePEM(p(file+".key"), "EC PRIVATE KEY", keyDER(k))
		writeKubeconfig(p("kubeconfig-"+file), cn, p(file+".crt"), p(file+".key"))
	}
}

// serverIPs: the API server certificate's IP SANs: loopback, the first Service IP, and extra.
func serverIPs(extra string) []net.IP {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")}
	for _, s := range strings.Split(extra, ",") {
		if s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil {
			log.Fatalf("--ips: %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return ips
}
