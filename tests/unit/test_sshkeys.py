"""The provisioner's own SSH key is made once, whole, even when many ask at once."""

import threading

from provisioner.sshkeys import operator_key


def test_many_makers_at_once_get_one_key(tmp_path):
    results, errors = [], []
    start = threading.Barrier(16)

    def make() -> None:
        start.wait()
        try:
            results.append(operator_key(tmp_path))
        except Exception as exc:  # the race this guards against raised FileExistsError
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({public for _, public in results}) == 1
    private, public = results[0]
    assert (private.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "ssh" / "id_ed25519.pub").read_text().strip() == public
    assert sorted(p.name for p in (tmp_path / "ssh").iterdir()) == ["id_ed25519", "id_ed25519.pub"]
    assert operator_key(tmp_path) == (private, public)  # and it stays
