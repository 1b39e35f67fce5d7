package modbus

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

var baudRates = map[int]uint32{
	300: unix.B300, 600: unix.B600, 1200: unix.B1200, 2400: unix.B2400, 4800: unix.B4800,
	9600: unix.B9600, 19200: unix.B19200, 38400: unix.B38400, 57600: unix.B57600,
	115200: unix.B115200, 230400: unix.B230400, 460800: unix.B460800, 921600: unix.B921600,
	1000000: unix.B1000000, 2000000: unix.B2000000, 4000000: unix.B4000000,
}

// openSerial opens a serial port raw (8N1 or as configured) and
// non-blocking, so that reads honour deadlines and Close interrupts them.
func openSerial(s busSpec) (*os.File, error) {
	speed, ok := baudRates[s.baud]
	if !ok {
		return nil, fmt.Errorf("modbus: %s: unsupported baud rate %d", s.addr, s.baud)
	}
	f, err := os.OpenFile(s.addr, os.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("modbus: open serial port: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("modbus: %s: %w", s.addr, err)
	}
	var terr error
	err = rc.Control(func(fd uintptr) {
		var t *unix.Termios
		t, terr = unix.IoctlGetTermios(int(fd), unix.TCGETS)
		if terr != nil {
			return
		}
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR |
			unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY | unix.INPCK
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.CBAUD | unix.CRTSCTS
		t.Cflag |= unix.CREAD | unix.CLOCAL | speed
		if s.dataBits == 7 {
			t.Cflag |= unix.CS7
		} else {
			t.Cflag |= unix.CS8
		}
		switch s.parity {
		case "E":
			t.Cflag |= unix.PARENB
		case "O":
			t.Cflag |= unix.PARENB | unix.PARODD
		}
		if s.stopBits == 2 {
			t.Cflag |= unix.CSTOPB
		}
		t.Ispeed, t.Ospeed = speed, speed
		t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
		terr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
	})
	if err == nil {
		err = terr
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("modbus: %s: set line parameters: %w", s.addr, err)
	}
	return f, nil
}
