package config

// mqttOnly and azureOnly are the cloud keys that belong to one protocol.
var (
	mqttOnly  = []string{"client_id", "username", "password_file"}
	azureOnly = []string{"host", "device_id", "shared_access_key", "shared_access_key_file", "shared_access_key_name", "sas_ttl", "identity"}
)
