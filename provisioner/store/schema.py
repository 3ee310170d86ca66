"""The database schema as a list of migrations."""

from __future__ import annotations

# Entry N (from 1) moves the schema to version N; never edit a released one, append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE nodes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        mac TEXT NOT NULL UNIQUE,
        rack TEXT NOT NULL,
        bmc_address TEXT NOT NULL,
        bmc_port INTEGER NOT NULL,
        bmc_username TEXT NOT NULL,
        bmc_password_sealed TEXT NOT NULL,
        cipher_suite INTEGER NOT NULL,
        state TEXT NOT NULL,
        step TEXT,
        target_state TEXT,
        deadline REAL,
        last_error TEXT,
        power_state TEXT NOT NULL DEFAULT 'unknown',
        agent_token_hash TEXT,
        agent_last_seen REAL,
        boot_count INTEGER NOT NULL DEFAULT 0,
        inspection TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX nodes_rack ON nodes (rack);
    CREATE INDEX nodes_token ON nodes (agent_token_hash);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
        ts REAL NOT NULL,
        event TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT,
        step TEXT,
        message TEXT
    );
    CREATE INDEX events_node ON events (node_id, id);
    CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        node_id INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        result TEXT
    );
    CREATE TABLE discovered (
        mac TEXT PRIMARY KEY,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        seen_count INTEGER NOT NULL
    );
    """,
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        format TEXT NOT NULL,
        virtual_size INTEGER NOT NULL,
        size INTEGER NOT NULL,
        source TEXT,
        created_at REAL NOT NULL,
        UNIQUE (name, version)
    );
    CREATE INDEX images_sha ON images (sha256);
    ALTER TABLE nodes ADD COLUMN image_sha256 TEXT;
    ALTER TABLE nodes ADD COLUMN previous_image_sha256 TEXT;
    ALTER TABLE nodes ADD COLUMN host_token_hash TEXT;
    ALTER TABLE nodes ADD COLUMN host_last_seen REAL;
    ALTER TABLE nodes ADD COLUMN host_facts TEXT;
    ALTER TABLE nodes ADD COLUMN host_key TEXT;
    ALTER TABLE nodes ADD COLUMN host_lost INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE nodes ADD COLUMN job_id INTEGER;
    ALTER TABLE nodes ADD COLUMN upgrade_domain INTEGER;
    ALTER TABLE nodes ADD COLUMN deploy_sha256 TEXT;
    ALTER TABLE nodes ADD COLUMN deploy_no_transfer INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX nodes_host_token ON nodes (host_token_hash);
    ALTER TABLE commands ADD COLUMN args_sealed TEXT;
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        options TEXT NOT NULL,
        status TEXT NOT NULL,
        abort INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        ended_at REAL
    );
    CREATE TABLE job_nodes (
        job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        node_id INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
        batch INTEGER NOT NULL,
        status TEXT NOT NULL,
        message TEXT,
        bytes INTEGER,
        started_at REAL,
        ended_at REAL,
        PRIMARY KEY (job_id, node_id)
    );
    """,
    """
    ALTER TABLE nodes ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    """,
    """
    CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        port INTEGER NOT NULL,
        rack TEXT NOT NULL,
        host_key TEXT NOT NULL,
        cores INTEGER NOT NULL,
        memory_mib INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE guests (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        idx INTEGER NOT NULL,
        host TEXT NOT NULL,
        cores TEXT NOT NULL,
        memory_mib INTEGER NOT NULL,
        upgrade_domain INTEGER NOT NULL,
        base_sha256 TEXT,
        app_sha256 TEXT,
        spec_sha256 TEXT,
        state TEXT NOT NULL,
        last_error TEXT,
        job_id INTEGER,
        ready_seconds REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX guests_host ON guests (host);
    CREATE TABLE host_images (
        host TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (host, sha256)
    );
    CREATE TABLE job_guests (
        job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        guest TEXT NOT NULL,
        action TEXT NOT NULL,
        batch INTEGER NOT NULL,
        host TEXT NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT,
        bytes INTEGER,
        started_at REAL,
        ended_at REAL,
        PRIMARY KEY (job_id, guest)
    );
    """,
    """
    ALTER TABLE job_nodes ADD COLUMN step TEXT;
    ALTER TABLE job_guests ADD COLUMN step TEXT;
    """,
    """
    ALTER TABLE nodes ADD COLUMN bmc_driver TEXT NOT NULL DEFAULT 'ipmi';
    ALTER TABLE nodes ADD COLUMN bmc_system TEXT;
    """,
    """
    ALTER TABLE nodes ADD COLUMN secure_boot INTEGER NOT NULL DEFAULT 0;
    """,
    # 8: what a job noted (multicast decisions) and its multicast sessions' reports
    """
    ALTER TABLE jobs ADD COLUMN stats TEXT NOT NULL DEFAULT '{}';
    """,
    # 9: guest networks (a stable address and MAC per guest; in its role's endpoint or not),
    # the bridge a registered host gives guests, and role endpoints (a VIP each)
    """
    ALTER TABLE guests ADD COLUMN address TEXT;
    ALTER TABLE guests ADD COLUMN mac TEXT;
    ALTER TABLE guests ADD COLUMN serving INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX guests_address ON guests (address);
    ALTER TABLE hosts ADD COLUMN bridge TEXT NOT NULL DEFAULT '';
    CREATE TABLE endpoints (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL UNIQUE,
        vip TEXT NOT NULL UNIQUE,
        ports TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 10: the roles file last deployed (healing and guest-aware reimages place guests again
    # by it), and why each guest is where it is (moved from X at T because Y)
    """
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    ALTER TABLE guests ADD COLUMN why TEXT;
    """,
    # 11: flat cost per node: every hot read goes through an index (pages of nodes in
    # (rack, name) order, nodes by state or job, commands by node, a job's members by node)
    """
    CREATE INDEX nodes_rack_name ON nodes (rack, name);
    DROP INDEX nodes_rack;
    CREATE INDEX nodes_state ON nodes (state);
    CREATE INDEX nodes_job ON nodes (job_id);
    CREATE INDEX commands_node ON commands (node_id, kind, status);
    CREATE INDEX job_nodes_node ON job_nodes (node_id);
    CREATE INDEX guests_job ON guests (job_id);
    """,
    # 12: several controllers, one fleet: each controller's row (a lease it renews), the
    # racks each serves (a lease per rack), the controller that runs each job (a lease), and
    # which controller wrote each event
    """
    CREATE TABLE controllers (
        name TEXT PRIMARY KEY,
        address TEXT NOT NULL DEFAULT '',
        wants TEXT NOT NULL DEFAULT '',
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL,
        lease_until REAL NOT NULL
    );
    CREATE TABLE rack_leases (
        rack TEXT PRIMARY KEY,
        controller TEXT NOT NULL,
        lease_until REAL NOT NULL
    );
    ALTER TABLE jobs ADD COLUMN owner TEXT;
    ALTER TABLE jobs ADD COLUMN lease_until REAL;
    CREATE INDEX jobs_status ON jobs (status);
    ALTER TABLE events ADD COLUMN controller TEXT;
    """,
    # 13: the nightly run remembers: each night, and each machine's result and phase times
    # in it, so a machine that keeps failing or a phase that grows slower stands out
    """
    CREATE TABLE nights (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        pool TEXT NOT NULL,
        job_id INTEGER,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        passed INTEGER NOT NULL,
        failed INTEGER NOT NULL
    );
    CREATE TABLE night_machines (
        night_id INTEGER NOT NULL REFERENCES nights (id) ON DELETE CASCADE,
        node TEXT NOT NULL,
        rack TEXT NOT NULL,
        passed INTEGER NOT NULL,
        reason TEXT,
        phases TEXT NOT NULL,
        PRIMARY KEY (night_id, node)
    );
    CREATE INDEX night_machines_node ON night_machines (node, night_id);
    """,
)
