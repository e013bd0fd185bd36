package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Pod IPs are loopback addresses shared by everything on the host: two harnesses running at
// once (parallel CI jobs, a developer's cluster beside a test run) would otherwise both hand
// out 127.0.0.2 and their pods would fail with "Address already in use". An agent therefore
// takes an address only when it can hold an exclusive flock on the address's lock file in
// ipLockDir — released by the kernel when the agent dies, however it dies — and nothing else
// listens on it.
var ipLockDir = filepath.Join(os.TempDir(), "floe-e2e-pod-ips")

// claimIP locks ip for this agent; nil when another agent holds it or something listens on it.
func claimIP(ip string) *os.File {
	if err := os.MkdirAll(ipLockDir, 0o777); err != nil {
		return nil
	}
	_ = os.Chmod(ipLockDir, 0o777|os.ModeSticky) // shared by every user's harness, like /tmp
	// read-only is enough for flock, and works on another user's lock file
	f, err := os.OpenFile(filepath.Join(ipLockDir, ip+".lock"), os.O_CREATE|os.O_RDONLY, 0o666)
	if err != nil {
		return nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil
	}
	if listening(ip) {
		f.Close()
		return nil
	}
	return f
}

// listening reports whether any TCP socket listens on ip (IPv4; from /proc/net/tcp).
func listening(ip string) bool {
	var a, b, c, d int
	if _, err := fmt.Sscanf(ip, "%d.%d.%d.%d", &a, &b, &c, &d); err != nil {
		return false
	}
	want := fmt.Sprintf("%02X%02X%02X%02X:", d, c, b, a) // /proc/net/tcp is little-endian
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		// sl local_address rem_address st ...; st 0A is LISTEN
		if len(fields) > 3 && strings.HasPrefix(fields[1], want) && fields[3] == "0A" {
			return true
		}
	}
	return false
}
