// composecheck loads a Compose file with compose-go, the library `docker compose config`
// is built on (schema validation, interpolation, merge keys, normalization, checks such as
// depends_on naming a service that does not exist), and prints the normalized project as
// JSON. It stands in for `docker compose config` where only the docker client is installed.
//
//	composecheck deploy/compose.yaml > project.json
//
// tests/deploy/tools.sh builds it; it is not part of the product.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: composecheck FILE")
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions([]string{os.Args[1]}, cli.WithOsEnv, cli.WithDotEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	project, err := cli.ProjectFromOptions(context.Background(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
	fmt.Println()
}
