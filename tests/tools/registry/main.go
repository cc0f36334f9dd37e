// Command registry is an in-memory OCI registry on loopback for tidegate's
// tests (Helm charts pushed to and pulled from oci://): the registry of
// github.com/google/go-containerregistry (pkg/registry), served as that
// module's cmd/registry serves it, but without cmd/registry's random
// "Congratulations" Warning header on 1% of responses (a line that would
// come and go in helm's output) and on the address given, port 0 meaning
// any free port. It prints the address it listens on as its first line of
// standard output, so a test can start it on 127.0.0.1:0 and read the port.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	address := flag.String("address", "127.0.0.1:0", "address to listen on (port 0: any free port)")
	quiet := flag.Bool("quiet", false, "do not log each request to standard error")
	flag.Parse()

	listener, err := net.Listen("tcp", *address)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "serving on %s\n", listener.Addr())
	opts := []registry.Option{}
	if *quiet {
		opts = append(opts, registry.Logger(log.New(io.Discard, "", 0)))
	}
	s := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler:           registry.New(opts...),
	}
	log.Fatal(s.Serve(listener))
}
