// Command streamspace-realtime is StreamSpace's real-time server: browsers
// receive live session events over WebSocket, services publish them over
// HTTP. Subcommands: serve, token, watch, agent, bench.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: streamspace-realtime <command> [flags]

commands:
  serve   run the server (serve --dev: embedded default with generated secrets)
  token   mint a browser JWT for a user of an organization
  watch   print the frames of a sessions socket (what a browser receives)
  agent   run the reference agent (simulated sessions) against a control plane
  bench   load a server with browser clients and broadcasts, and report (bench agents:
          agents and commands; bench vnc: viewers of a session's desktop beside websockify;
          bench baseline: run the gorilla chat-example hub it compares against)

Run 'streamspace-realtime <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "streamspace-realtime:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "token":
		return token(args[1:], getenv, stdout, stderr)
	case "watch":
		return watch(ctx, args[1:], getenv, stdout, stderr)
	case "agent":
		return agent(ctx, args[1:], getenv, stdout, stderr)
	case "bench":
		return benchCmd(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
