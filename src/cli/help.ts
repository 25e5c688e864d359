/**
 * The texts printed for `qbd --help` and `qbd --version`. The options are
 * qemu-storage-daemon's; so are their value syntaxes.
 */

export function helpText(): string {
  return `Usage: qbd [options]
       qbd shell [shell options]
A block daemon driven by QMP, compatible with qemu-storage-daemon.

  -h, --help             print this text and exit
  -V, --version          print the version and exit
  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]
                         turn on trace events matching <pattern> (or those
                         listed in <file>), writing them to <file>

  --blockdev [driver=]<driver>[,node-name=<name>][,read-only=on|off]
             [,cache.direct=on|off][,cache.no-flush=on|off]
             [,discard=ignore|unmap][,detect-zeroes=on|off|unmap]
             [,auto-read-only=on|off][,force-share=on|off]
             [,options of the driver...]
                         add a block node, like the QMP command blockdev-add
  --chardev <backend>,id=<id>[,options of the backend...]
                         add a character device, e.g. a socket for a monitor:
                         socket,id=<id>,path=<path>,server=on,wait=off
  --daemonize            go to the background once start-up has succeeded;
                         the parent process exits then
  --export [type=]nbd,id=<id>,node-name=<node>[,name=<export name>]
           [,writable=on|off][,bitmap=<bitmap>]
                         serve a block node over NBD (needs --nbd-server)
  --monitor [chardev=]<chardev id>[,mode=control][,pretty=on|off]
                         run a QMP monitor on a character device
  --nbd-server addr.type=unix,addr.path=<path>[,max-connections=<n>]
  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>
               [,tls-creds=<id>][,tls-authz=<id>][,max-connections=<n>]
                         start the NBD server that exports are served from
  --object help          list the types of object that can be created
  --object <type>,help   list the properties of objects of <type>
  --object [qom-type=]<type>,id=<id>[,<property>=<value>...]
                         create an object, e.g. an iothread or a secret
  --pidfile <path>       write the process id to <path> once started

Options are applied in the order given. Each value is either key=value pairs
separated by commas (",," stands for a literal comma, dotted keys such as
cache.direct=on build nested options, keys like a.0, a.1 build lists) or,
except for --chardev and --trace, a JSON object starting with "{".

qbd shell connects to a running daemon's QMP monitor and offers an
interactive prompt for QMP commands.
`;
}

export function versionText(version: string): string {
  return `qbd version ${version}
A block daemon compatible with qemu-storage-daemon 7.2.
`;
}
