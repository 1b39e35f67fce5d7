package modbus
