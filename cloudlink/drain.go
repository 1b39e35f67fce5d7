package cloudlink

import (
	"time"
)

// drain tracks backlog replay progress for Status and the logs.
type drain struct {
	active    bool
	start     time.Time
	total     int // backlog size at connect (estimate)
	sent      int // backlog records acknowledged
	rateStart time.Time
	rateSent  int
	rate      float64
	lastLog   time.Time
}

// startDrain begins tracking a backlog ending at mark.
func (s *Session) startDrain(mark uint64) {
	total := s.depth()
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	now := time.Now()
	s.drain = drain{active: total > 0, start: now, total: total, rateStart: now, lastLog: now}
	if total > 0 {
		s.log.Info("replaying backlog behind live data", "backlog", total, "up_to_seq", mark, "replay_rate", s.opt.ReplayRate)
	}
}

// endDrain is called when the backlog is out (its last acks may still come).
func (s *Session) endDrain() {
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	if !s.drain.active {
		return
	}
	s.drain.active = false
	took := time.Since(s.drain.start)
	s.log.Info("backlog replayed", "records", s.drain.sent, "took", took.Round(time.Millisecond),
		"rate", int(float64(s.drain.sent)/max(took.Seconds(), 1e-3)))
}

// acked counts n records acknowledged upstream; srcs tags them.
func (s *Session) acked(n int, srcs []*source) {
	back := 0
	for _, src := range srcs {
		if src == srcBacklog {
			back++
		}
	}
	s.update(func(st *Status) { st.Forwarded += uint64(n) })
	if back == 0 {
		return
	}
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	d := &s.drain
	d.sent += back
	now := time.Now()
	if el := now.Sub(d.rateStart); el >= time.Second {
		r := float64(d.sent-d.rateSent) / el.Seconds()
		if d.rate == 0 {
			d.rate = r
		} else {
			d.rate = 0.5*d.rate + 0.5*r
		}
		d.rateStart, d.rateSent = now, d.sent
	}
	if d.active && now.Sub(d.lastLog) >= 30*time.Second {
		d.lastLog = now
		st := s.drainStatus()
		s.log.Info("replaying backlog", "remaining", st.Remaining, "rate", int(st.Rate), "eta", st.ETA.Round(time.Second))
	}
}

// drainStatus computes Drain; s.drainMu must be held.
func (s *Session) drainStatus() Drain {
	d := &s.drain
	st := Drain{Active: d.active, Rate: d.rate, Remaining: max(d.total-d.sent, 0)}
	if !d.active {
		st.Remaining = 0
	}
	if st.Rate > 0 {
		st.ETA = time.Duration(float64(st.Remaining) / st.Rate * float64(time.Second))
	}
	return st
}
