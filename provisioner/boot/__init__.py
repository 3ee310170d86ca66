"""Network boot: dnsmasq for DHCP, tftpy for the loader, HTTP for everything else."""
