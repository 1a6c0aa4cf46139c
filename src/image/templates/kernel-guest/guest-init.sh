#!/bin/busybox sh
# The guest's /init (PID 1, in the kernel template's initramfs): load the virtio and ext4
# modules, configure the one network interface QEMU's user network reaches, mount the
# instance's root disk, then hand over to shoal-run (listening socket, the service, exit code).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox cat /modules/order); do /bin/busybox insmod "/modules/$m.ko"; done
/bin/busybox ip link set lo up
/bin/busybox ip link set eth0 up
/bin/busybox ip addr add 10.0.2.15/24 dev eth0
/bin/busybox ip route add default via 10.0.2.2
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && [ -b /dev/vdb ] && [ -b /dev/vdc ] && break; /bin/busybox usleep 50000; done
/bin/busybox mkdir -p /newroot
/bin/busybox mount -t ext4 -o noatime /dev/vda /newroot || { echo "shoal-init: cannot mount the root disk"; exec /shoal-run; }
for d in proc sys dev tmp; do /bin/busybox mkdir -p "/newroot/$d"; done
/bin/busybox mount -t proc proc /newroot/proc
/bin/busybox mount -t sysfs sys /newroot/sys
/bin/busybox mount -t devtmpfs dev /newroot/dev
/bin/busybox mount -t tmpfs -o mode=1777 tmp /newroot/tmp
/bin/busybox hostname "${SHOAL_HOSTNAME:-shoal}"
exec /shoal-run </dev/null >/dev/console 2>&1
