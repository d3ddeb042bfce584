/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cli_help.c — the one text that says how to use tillsync: `tillsync --help` (every
 * command, short), `tillsync CMD --help` (one command, whole) and tillsync(1), which the build
 * generates with `tillsync help --man` (CMakeLists.txt). A command's options are said once, here.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct {
    const char *name;
    const char *synopsis; /* after "tillsync NAME "; one line per form, '\n' between */
    const char *summary;  /* one line for the overview */
    const char *body;     /* the rest: what it does, its options ("  --opt ARG  what"), output */
} cmd_help;

static const cmd_help CMDS[] = {
    {"init", "DB [--key PATH]", "create DB and its device key file DB.key (both 0600)",
     "Creates the database and this device's key file when they are missing; on an existing\n"
     "database it only prints what it is. Files are created readable by their owner only.\n"
     "\n"
     "  --key PATH     the device key file (default: DB.key)\n"},
    {"sql", "DB SQL [--json]", "run SQL with replication active; rows print as a|b|c",
     "Runs the statements of SQL on DB; what they change in replicated tables is sealed into\n"
     "this till's log and reaches the other tills. Rows print like the sqlite3 shell's list\n"
     "mode: columns separated by |, NULL as nothing. SQL that starts with '-' (a comment)\n"
     "goes after --: tillsync sql DB -- '-- note' would otherwise be read as an option.\n"
     "\n"
     "  --json         print the rows of every statement as one array of objects, SQL types\n"
     "                 kept (blobs as hex)\n"},
    {"replicate", "DB TABLE [--counter COLUMN]... [--max|--min|--review COLUMN]...",
     "make TABLE replicated",
     "Makes TABLE replicated: its rows merge across tills (last writer wins per field). TABLE\n"
     "needs a primary key that is not a rowid alias. A table named like an option goes after\n"
     "--: tillsync replicate DB -- -x\n"
     "\n"
     "  --counter COLUMN  COLUMN (INTEGER) is a PN-counter: concurrent increments add up\n"
     "  --max COLUMN      COLUMN keeps the largest value ever written (SQLite's order: numbers,\n"
     "                    then text, then blobs; NULL is no value); a write below it is undone\n"
     "  --min COLUMN      COLUMN keeps the smallest value ever written, likewise\n"
     "  --review COLUMN   last writer wins, and every concurrent write is an open conflict a\n"
     "                    person settles (tillsync status counts them)\n"},
    {"state", "DB [--json]", "site id, incarnation and version vector",
     "Prints this till's site id, incarnation, public key, clock and version vector.\n"
     "The --json form is what bundle --since reads.\n"
     "\n"
     "  --json         as JSON\n"},
    {"bundle", "DB FILE [--since STATEFILE]", "write the batches a peer with that state lacks",
     "Writes a bundle: the batches of DB's log, for a till synced by files (USB stick, mail).\n"
     "\n"
     "  --since STATEFILE  only what a till whose `state --json` is STATEFILE lacks\n"
     "                     (default: all batches)\n"},
    {"merge", "DB FILE [--json]", "verify and merge a bundle",
     "Verifies every batch of the bundle FILE and merges it into DB. Exits 1 if anything was\n"
     "refused; prints how many batches were merged, duplicates, held, parked, refused, and\n"
     "the conflicts last-writer-wins resolved.\n"
     "\n"
     "  --json         the counts and messages as one JSON object\n"},
    {"hash", "DB [TABLE]", "hash of the visible content of the replicated tables",
     "Two tills with the same hash show the same rows. TABLE: that table only.\n"},
    {"conflicts",
     "DB [--json] [--open] [--since ID] [--limit N]\n"
     "DB resolve ID --keep|--take-other|--value V\n"
     "DB dismiss ID...|--all",
     "concurrent writes last-writer-wins resolved: list, resolve, dismiss",
     "Lists each field two tills wrote concurrently: the value kept and the one overwritten,\n"
     "which till wrote each and when, and whether a person resolved it (on any till: a\n"
     "resolution reaches every till like a sale). Resolved entries older than 30 days are\n"
     "dropped when the log is pruned; open ones stay.\n"
     "\n"
     "  --json         as JSON\n"
     "  --open         only the open ones\n"
     "  --since ID     only those after ID (the next page: the last ID shown)\n"
     "  --limit N      at most N\n"
     "\n"
     "conflicts DB resolve ID   resolve conflict ID, one of:\n"
     "  --keep         keep the value that won\n"
     "  --take-other   write the overwritten value again: it wins on every till\n"
     "  --value V      write V: text, or a number where the column holds numbers (its\n"
     "                 affinity decides, as for any UPDATE)\n"
     "conflicts DB dismiss ID...  resolve them as dismissed (the value that won stays)\n"
     "  --all          every open conflict\n"},
    {"shop",
     "create KEYFILE --name NAME\n"
     "sign KEYFILE REQ [--days N] [--name DEVICE] [--no-data-key]\n"
     "revoke KEYFILE DEVICEKEY [--cutoff SITE:SEQ]... [--cutoffs-from DB] [--check DB]... "
     "[--dry-run] [--no-data-key]\n"
     "rotate KEYFILE NEWKEYFILE\n"
     "sign-migration KEYFILE NNN_NAME.sql [-o OUT]\n"
     "grant KEYFILE --relay tcp://HOST:PORT#RELAYKEY... [--quota-mb N] [--days N]\n"
     "show FILE\n"
     "data-key KEYFILE [--device PUBKEY]... [--from DB]",
     "the shop's admin key: create it, sign and revoke devices, sign migrations",
     "shop create     create a shop: its admin key file KEYFILE (0600; keep it off the tills)\n"
     "shop sign       verify an enrolment request REQ, print a certificate (valid 365 days\n"
     "                unless --days N; --name DEVICE names the device) and the shop data key\n"
     "                sealed to every device the key file certified (--no-data-key: not)\n"
     "shop revoke     print a revocation of DEVICEKEY (hex, or a certificate file); its\n"
     "                batches after the cutoffs are refused unless honest tills merged them\n"
     "                  --cutoff SITE:SEQ    keep what DEVICEKEY wrote up to SEQ of SITE\n"
     "                  --cutoffs-from DB    the cutoffs DB knows\n"
     "                  --check DB           say what DB holds beyond the cutoffs\n"
     "                  --dry-run            show what it cuts, print no revocation\n"
     "                and a new data key epoch sealed to the devices left (--no-data-key: not)\n"
     "shop rotate     new admin key for the shop; print the rotation record\n"
     "shop sign-migration\n"
     "                sign a migration for every till of the shop (-o OUT, default\n"
     "                NNN_NAME.tsmig); install it with migrate DB OUT\n"
     "shop grant      print a relay grant: the relays that serve the shop (--relay ADDR#KEY,\n"
     "                or --relay ADDR --relay-key HEX; repeatable, in order of preference),\n"
     "                --quota-mb N (0: none), valid --days N (365); install it with enrol\n"
     "shop show       describe a key file, request, certificate or revocation\n"
     "shop data-key   print the shop data key (epoch 1 made if the key file has none) sealed\n"
     "                to the devices the key file certified, and to those given:\n"
     "                  --device PUBKEY      a device key (hex, or a certificate file)\n"
     "                  --from DB            the certified, not revoked devices of DB\n"
     "                at most 32 devices (a DATA KEY record's limit); install with trust add\n"},
    {"enrol-request", "DB [--name NAME]", "print this till's enrolment request",
     "  --name NAME    the device name in the request (default: the host name)\n"},
    {"enrol", "DB CERT [FILE]...\nDB --shop-key KEYFILE [--name NAME] [--days N]",
     "install this till's certificate: DB joins the shop",
     "Installs this till's certificate CERT (and other devices' certificates and rotations in\n"
     "FILEs). With --shop-key: request, sign and install in one step, on one machine.\n"
     "\n"
     "  --shop-key KEYFILE  the shop's admin key file\n"
     "  --name NAME         the device name (with --shop-key)\n"
     "  --days N            the certificate's validity in days (with --shop-key)\n"},
    {"revoke", "DB REVOCATION", "install a revocation; it replicates to every till", ""},
    {"trust", "DB [--json]\nadd DB FILE...", "the shop DB is enrolled in and its devices",
     "  --json         as JSON\n"
     "trust add DB FILE...  install every trust record of the FILEs (certificates, revocations,\n"
     "                      data keys, grants...; a file may hold several)\n"},
    {"export", "DB TABLE|--query SQL [--format csv|json|ndjson] [-o FILE]",
     "write a table or query as CSV (RFC 4180), JSON or NDJSON",
     "  --query SQL    a query instead of TABLE (read-only)\n"
     "  --format F     csv (default), json or ndjson\n"
     "  -o FILE        write FILE instead of stdout\n"},
    {"import", "DB TABLE FILE [--format csv|json|ndjson] [--skip-bad]",
     "upsert FILE's rows (they replicate)",
     "Any bad value: nothing is imported (the error names the line and column).\n"
     "\n"
     "  --format F     csv, json or ndjson (default: from FILE's name)\n"
     "  --skip-bad     import the good rows, write the bad ones to FILE.rejects\n"},
    {"backup", "DB OUT [--encrypt] [--passphrase-file F]", "online backup into one verified file",
     "Writes a backup while the tills go on selling, and verifies it.\n"
     "\n"
     "  --encrypt            encrypt it: the passphrase from F, $TILLSYNC_PASSPHRASE or the\n"
     "                       terminal\n"
     "  --passphrase-file F  the passphrase (with --encrypt)\n"
     "\n"
     "Cloud backup through the relay of the shop's grant (docs/BACKUP.md, \"Cloud backup\"),\n"
     "encrypted under the shop's data key:\n"
     "  backup DB --remote [--max-chunks N]  make one and upload it (resumes an interrupted\n"
     "                       upload first; --max-chunks: send at most N 1-MiB chunks now)\n"
     "  backup list DB --remote [--json]      the shop's cloud backups\n"
     "  backup delete DB --remote ID          delete one\n"
     "  --timeout-ms MS      how long to wait for the relay (10000)\n"},
    {"backup-check", "FILE [--passphrase-file F] [--json]",
     "verify a backup without restoring it; print its manifest",
     "  --passphrase-file F  the passphrase of an encrypted backup\n"
     "  --json               the manifest as JSON\n"},
    {"restore", "DB FILE [--passphrase-file F]", "replace DB's content with a verified backup",
     "DB must not be in use. DB gets a new site id and catches up from its peers.\n"
     "\n"
     "  --passphrase-file F  the passphrase of an encrypted backup\n"
     "  restore DB --remote ID|latest  restore a cloud backup of the shop (checked and\n"
     "                       decrypted before DB is touched; the till stays enrolled)\n"},
    {"run",
     "DB [--config FILE] [--listen tcp://ADDR:PORT] [--peer tcp://ADDR:PORT[#KEY]]... [-v|-q]",
     "run the sync node in the foreground; stops on SIGINT/SIGTERM",
     "Runs the sync node for DB in the foreground. One node per database: a second run on the\n"
     "same DB is refused, naming the running one's pid and address. Under systemd it says\n"
     "READY once it listens, feeds the watchdog, and logs at journald priorities.\n"
     "\n"
     "  --config FILE        read settings from FILE first: 'name = value' lines, the names\n"
     "                       of these options without the dashes ('no-mdns = true'); options\n"
     "                       given on the command line override them, --peer adds peers\n"
     "  --listen EP          accept peers on EP, tcp://ADDR:PORT (PORT 1-65535, or * for any\n"
     "                       free one; \"\" for none; default tcp://0.0.0.0:7400)\n"
     "  --peer EP[#KEY]      dial EP (KEY: its public key, 64 hex digits); repeatable\n"
     "  --key PATH           the device key file (default: DB.key)\n"
     "  --status-file PATH   where the node writes its status (default: DB.node)\n"
     "  --no-mdns            no discovery (an enrolled till finds the tills of its shop on the\n"
     "                       LAN over mDNS by default)\n"
     "  --no-relay           never use the shop's relay (by default a till whose shop has a\n"
     "                       relay grant and which holds the data key syncs through it too)\n"
     "  --liveness MS        a connected till silent for MS milliseconds is taken as gone and\n"
     "                       dialled again (3500; 1000 to 600000: idle tills are pinged every\n"
     "                       second); longer on a machine too loaded to answer in time\n"
     "  --prune-keep N       keep the last N batches per till (10000) when pruning what all\n"
     "                       tills hold; a till behind then gets a snapshot\n"
     "  --prune-every S      prune every S seconds (10)\n"
     "  --no-prune           never prune\n"
     "  --log-max-batches N  record the log policy (as prune does): the node keeps the log\n"
     "  --log-max-mb N       within it, whatever tills acknowledged ('none': no bound)\n"
     "  --log-max-days D\n"
     "  --backup-every P     scheduled backups every P (90s, 30m, 6h, 1d) ...\n"
     "  --backup-dir DIR     ... into DIR (alone: no schedule, the console's \"back up now\")\n"
     "  --keep N             ... the newest N kept (10)\n"
     "  --cloud-backup-every P  cloud backups to the shop's relay every P (90s, 30m, 6h, 1d)\n"
     "  --cloud-keep N       ... the newest N of this till's kept there (default: all)\n"
     "  -v, --verbose        log debug lines\n"
     "  -q, --quiet          log warnings and errors only\n"
     "  --print-config       print the settings in effect (config file syntax) and exit\n"
     "  --console ADDR:PORT  serve the shop console (web page and REST API, docs/CONSOLE.md)\n"
     "                       on ADDR:PORT (default 127.0.0.1 at a free port; `status` shows\n"
     "                       its address with the token of DB.console-token)\n"
     "  --no-console         no console\n"
     "  --console-password-file F  a password (F's first line) the console asks for besides\n"
     "                       the token; needed to listen beyond loopback\n"},
    {"status", "DB [--json] [--key PATH]",
     "the node's peers, lag, pending, held, parked, refused; exit 3 if no node runs",
     "Shows whether a node runs on DB, its peers, lag, pending, held, parked and refused\n"
     "batches, and whether another till's table definitions differ.\n"
     "Exit status: 0 a node runs, 3 no node runs, 1 DB cannot be read, 2 usage error.\n"
     "\n"
     "  --json         as JSON (\"running\", \"state\": ok or attention, \"attention\": why)\n"
     "  --key PATH     the device key file (default: DB.key)\n"},
    {"schema", "DB [--json]", "this till's replicated tables as compared with other tills",
     "Names, types, key, counters and column policies (max, min, review) of the replicated\n"
     "tables, and their digest.\n"
     "\n"
     "  --json         as JSON\n"},
    {"parked", "DB [--json] [--limit N]", "changes from other tills not applied here, and why",
     "  --json         as JSON\n"
     "  --limit N      at most N items\n"},
    {"migrate", "DB DIR\nDB FILE.tsmig\nDB --status [--json]",
     "apply DIR's migrations, install a signed migration, or list applied ones",
     "DIR holds NNN_name.sql files, applied in order, each once. A signed FILE.tsmig (shop\n"
     "sign-migration) runs here and replicates to every till of the shop, which run it too.\n"
     "\n"
     "  --status       list the applied migrations\n"
     "  --json         with --status: as JSON\n"},
    {"prune", "DB [--log-max-batches N|none] [--log-max-mb N|none] [--log-max-days D|none]",
     "record the log policy given and prune the log to it now",
     "Defaults: 1000000 batches, as many MB as the rest of the database and at least 64, 30\n"
     "days. A till that still lacked what is pruned needs a snapshot (enrolled shops).\n"},
    {"demo", "[--dir DIR] [--stay]\n--offline [--dir DIR] [--seed N] [--keep]",
     "three tills sell at once and converge",
     "Three tills as three processes on loopback sell at once; their sales show up on the\n"
     "others live, then converge. Each till's shop console URL is printed with its token, as\n"
     "status prints it. --offline: three offline tills converge by bundles.\n"
     "\n"
     "  --stay         then keep the tills up, each selling about once every 1-3 s, until\n"
     "                 Ctrl-C (SIGINT or SIGTERM): watch the consoles, resolve the conflict\n"
     "                 the demo makes (or make one as it says); the folder is kept and named\n"
     "  --dir DIR      work in DIR (default: a new temporary folder)\n"
     "  --seed N       the offline demo's random seed\n"
     "  --keep         keep the folder\n"},
    {"relay",
     "init DIR\nadmit DIR SHOP_ADMIN_PUBKEY --quota-mb N [--expires YYYY-MM-DD] [--store URL]\n"
     "run DIR --listen tcp://ADDR:PORT [--store URL]\nstatus DIR [--json] [--store URL]",
     "a blind relay: stores and forwards a shop's encrypted envelopes (docs/RELAY.md)",
     "A relay lives in DIR: relay.key (its own key) and relay.db (SQLite). It serves the tills\n"
     "of the shops admitted with their admin public key, keeps their envelopes without being\n"
     "able to read them, and refuses anyone else with a reason it counts.\n"
     "\n"
     "  init DIR       make DIR, the relay key and an empty store; print the public key\n"
     "  admit          serve the shop of SHOP_ADMIN_PUBKEY (64 hex digits, `shop info`)\n"
     "    --quota-mb N          at most N MiB of envelopes for the shop\n"
     "    --expires YYYY-MM-DD  the admission ends at the start of that day (UTC)\n"
     "  run            serve in the foreground until SIGINT/SIGTERM; one log line per session\n"
     "                 event; under systemd it reports readiness (sd_notify)\n"
     "    --listen tcp://ADDR:PORT  the endpoint to bind\n"
     "  status         shops, bytes, envelopes, sessions and refusals by reason\n"
     "    --json                as JSON\n"
     "  --store nats://HOST:PORT[,HOST:PORT...]  (admit, run, status) keep shops, envelopes\n"
     "                 and counters in NATS JetStream instead of DIR/relay.db, shared by any\n"
     "                 number of relay processes (DIR then holds only the key)\n"},
    {"help", "[COMMAND]\n--man", "this text, one command's help, or the manual page",
     "  --man          print tillsync(1) in roff\n"},
};
#define NCMDS (sizeof CMDS / sizeof CMDS[0])

static const char *INTRO = "Keeps the SQLite databases of a shop's tills in sync.\n";
static const char *EXIT =
    "0 success; 1 a failure (one line on stderr: \"tillsync: what: why\"); 2 a usage error.\n"
    "status: 0 a node runs, 3 no node runs.\n";

static const cmd_help *find(const char *name)
{
    for (size_t i = 0; i < NCMDS; i++)
        if (!strcmp(CMDS[i].name, name)) return &CMDS[i];
    return NULL;
}

/* Each line of a synopsis prefixed with pre and the command's name. */
static void synopsis(const char *pre, const cmd_help *c)
{
    const char *s = c->synopsis;
    do {
        size_t n = strcspn(s, "\n");
        printf("%s%s%s%.*s\n", pre, c->name, n ? " " : "", (int)n, s);
        s += n;
    } while (*s++);
}

void cli_help_overview(void)
{
    printf("usage: tillsync COMMAND [ARGS]    ('tillsync COMMAND --help' for one command)\n\n%s\n"
           "commands:\n",
           INTRO);
    for (size_t i = 0; i < NCMDS; i++) {
        synopsis("  ", &CMDS[i]);
        printf("        %s\n", CMDS[i].summary);
    }
    printf("  --version\n        print the version\n\nexit status: %s", EXIT);
}

int cli_help_command(const char *cmd)
{
    const cmd_help *c = find(cmd);
    if (!c) return -1;
    synopsis("usage: tillsync ", c);
    printf("\n%s%s%s", c->summary, c->body[0] ? "\n\n" : "\n", c->body);
    return 0;
}

/* Text for roff: backslashes and dashes escaped, a line starting with . or ' protected. */
static void roff(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((i == 0 || s[i - 1] == '\n') && (s[i] == '.' || s[i] == '\'')) fputs("\\&", stdout);
        if (s[i] == '\\')
            fputs("\\e", stdout);
        else if (s[i] == '-')
            fputs("\\-", stdout);
        else
            putchar(s[i]);
    }
}

void cli_help_man(void)
{
    printf(".\\\" Generated by 'tillsync help --man' from tools/cli_help.c: edit that, not this.\n"
           ".TH TILLSYNC 1 \"\" \"tillsync %s\" \"User Commands\"\n"
           ".SH NAME\ntillsync \\- keep the SQLite databases of a shop's tills in sync\n"
           ".SH SYNOPSIS\n.B tillsync\n.I COMMAND\n[\\fIARGS\\fR]\n.br\n.B tillsync\n"
           ".I COMMAND\n\\-\\-help\n.SH DESCRIPTION\n",
           tsync_version());
    roff(INTRO, strlen(INTRO));
    printf("Options take their value as \\fB\\-\\-opt value\\fR or \\fB\\-\\-opt=value\\fR and "
           "may come before or after the operands; \\fB\\-\\-\\fR ends them.\n.SH COMMANDS\n");
    for (size_t i = 0; i < NCMDS; i++) {
        const cmd_help *c = &CMDS[i];
        const char *s = c->synopsis;
        printf(".TP\n");
        do {
            size_t n = strcspn(s, "\n");
            printf(".B tillsync %s\n", c->name);
            roff(s, n);
            printf("\n.br\n");
            s += n;
        } while (*s++);
        roff(c->summary, strlen(c->summary));
        printf(".\n");
        if (c->body[0]) {
            printf(".RS\n.nf\n");
            roff(c->body, strlen(c->body));
            printf(".fi\n.RE\n");
        }
    }
    printf(".SH EXIT STATUS\n");
    roff(EXIT, strlen(EXIT));
    printf(
        ".SH ENVIRONMENT\n.TP\n.B TILLSYNC_PASSPHRASE\nthe passphrase of encrypted backups.\n"
        ".TP\n.B NOTIFY_SOCKET, WATCHDOG_USEC, JOURNAL_STREAM\nset by systemd for \\fBrun\\fR: "
        "readiness, watchdog, journald priorities.\n"
        ".SH FILES\n.TP\n.I DB.key\nthe device key (0600).\n.TP\n.I DB.node\nthe running "
        "node's status, for \\fBstatus\\fR.\n.TP\n.I DB.node.lock\nheld by the running node: "
        "one node per database.\n.SH SEE ALSO\n\\fBsqlite3\\fR(1), \\fBsystemd.service\\fR(5)\n");
}
