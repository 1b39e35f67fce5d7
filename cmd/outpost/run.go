package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	_ "github.com/outpost-iot/outpost/adapters/all"
	"github.com/outpost-iot/outpost/gateway"
	"github.com/outpost-iot/outpost/gateway/config"
	"github.com/outpost-iot/outpost/gateway/service"
)

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opt := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opt)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opt)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", "-c FILE\n\nRuns the gateway: the store under gateway.data_dir, the local hub, the adapters and the\ncloud link. Under systemd (Type=notify) it reports READY=1 and STATUS=, and pings the\nwatchdog only while its health checks pass. SIGTERM stops it; nothing acknowledged is lost.", stderr)
	file := fs.String("c", "/etc/outpost/outpost.yaml", "config `FILE`")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	format := fs.String("log-format", "text", "text or json")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		fmt.Fprintf(stderr, "outpost run: %v\n", err)
		return 2
	}
	cfg, err := config.Load(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	g := gateway.New(cfg, log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	select {
	case err := <-done:
		fmt.Fprintf(stderr, "outpost run: %v\n", err)
		return 1
	case <-g.Ready():
	}
	if err := service.Ready(); err != nil {
		log.Warn("systemd notify failed", "err", err)
	}
	go func() {
		if err := service.Watchdog(ctx, g.Alive); err != nil && ctx.Err() == nil {
			log.Error("watchdog stopped", "err", err)
		}
	}()
	statusTick := time.NewTicker(10 * time.Second)
	defer statusTick.Stop()
	for {
		select {
		case err := <-done:
			_ = service.Stopping()
			if err != nil {
				fmt.Fprintf(stderr, "outpost run: %v\n", err)
				return 1
			}
			return 0
		case <-hup:
			// Reload: re-read the config; restart only the adapters whose
			// config changed. The store and the queue are never touched. An
			// invalid config is refused and the running one kept.
			_ = service.Reloading()
			cfg, err := config.Load(*file)
			if err != nil {
				log.Error("reload refused: config invalid; keeping the running one", "err", err)
			} else if res, err := g.Reload(cfg); err != nil {
				log.Error("reload: some devices failed to start", "err", err)
			} else if len(res.NeedRestart) > 0 {
				log.Warn("reload: these sections changed and take effect after a restart", "sections", res.NeedRestart)
			}
			_ = service.Ready()
		case <-statusTick.C:
			st := g.Status()
			link := "none"
			if st.Link != nil {
				link = "down"
				if st.Link.Connected {
					link = "up"
				}
			}
			_ = service.Status(fmt.Sprintf("queue %d, link %s", st.Queue.Depth, link))
		}
	}
}

func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", "-c FILE\n\nValidates a config: every problem is printed as FILE:LINE:COL: message (exit 1);\na valid file prints a one-line summary (exit 0).", stderr)
	file := fs.String("c", "/etc/outpost/outpost.yaml", "config `FILE`")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	cfg, err := config.Load(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok: %s\n", *file, cfg.Summary())
	return 0
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", "[--http ADDR]\n\nAsks the running daemon (its http.listen address) what it is doing.", stderr)
	addr := fs.String("http", config.DefaultHTTPListen, "the daemon's http.listen `ADDR`")
	asJSON := fs.Bool("json", false, "print the raw JSON status")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + *addr + "/api/status")
	if err != nil {
		fmt.Fprintf(stderr, "outpost status: is the daemon running? %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	var st gateway.Status
	body, _ := io.ReadAll(resp.Body)
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "outpost status: bad answer from %s: %v\n", *addr, err)
		return 1
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st gateway.Status) {
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY: " + strings.Join(st.Problems, "; ")
	}
	fmt.Fprintf(w, "gateway   %s: %s\n", st.ID, health)
	fmt.Fprintf(w, "hub       %s\n", st.Hub)
	fmt.Fprintf(w, "ingest    %d readings stored of %d produced\n", st.Stored, st.Produced)
	q := st.Queue
	fmt.Fprintf(w, "queue     %d records, %d bytes", q.Depth, q.Bytes)
	if q.Depth > 0 {
		fmt.Fprintf(w, ", oldest %s", time.Duration(q.OldestAgeSeconds*float64(time.Second)).Round(time.Second))
	}
	if q.Dropped+q.Expired+q.Dead > 0 {
		fmt.Fprintf(w, " (dropped %d, expired %d, dead letters %d)", q.Dropped, q.Expired, q.Dead)
	}
	fmt.Fprintln(w)
	if l := st.Link; l != nil {
		state := "down"
		if l.Connected {
			state = "up"
		}
		fmt.Fprintf(w, "link      %s %s since %s, %d forwarded, %d outages", l.Protocol, state, l.Since.Format(time.RFC3339), l.Forwarded, l.Outages)
		if l.Drain.Active {
			fmt.Fprintf(w, ", draining: %d left at %.0f/s, ETA %s", l.Drain.Remaining, l.Drain.Rate, l.Drain.ETA.Round(time.Second))
		}
		if !l.Connected && l.LastError != "" {
			fmt.Fprintf(w, " (%s)", l.LastError)
		}
		fmt.Fprintln(w)
		for _, id := range slices.Sorted(maps.Keys(l.Devices)) { // identity per-device
			d := l.Devices[id]
			state := "down"
			if d.Connected {
				state = "up"
			}
			fmt.Fprintf(w, "  as      %-12s %-4s %d forwarded, %d outages", id, state, d.Forwarded, d.Outages)
			if d.Parked > 0 {
				fmt.Fprintf(w, ", %d waiting", d.Parked)
			}
			if !d.Connected && d.LastError != "" {
				fmt.Fprintf(w, " (%s)", d.LastError)
			}
			fmt.Fprintln(w)
		}
	} else {
		fmt.Fprintln(w, "link      none (buffer only)")
	}
	for _, d := range st.Devices {
		seen := "never"
		if d.LastSeen != nil {
			seen = time.Since(*d.LastSeen).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "device    %-12s %-7s %-8s last %s, %d readings", d.ID, d.Kind, d.Health, seen, d.Readings)
		if d.Detail != "" {
			fmt.Fprintf(w, " (%s)", d.Detail)
		}
		fmt.Fprintln(w)
	}
	for i, c := range st.Commands {
		if i == 10 {
			break
		}
		fmt.Fprintf(w, "command   %-20s %-12s %s %s\n", c.ID, c.Device, c.State, c.Error)
	}
}
