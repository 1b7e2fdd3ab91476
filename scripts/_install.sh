# Sourced by the scripts/_<name>_env.sh: the one way they install Debian packages and make
# the venvs that keep a framework or a client out of Verbund's own install. Each venv
# holds a stamp file with what was installed, so running a script again is a no-op until
# the wanted versions change.

# debian_install PACKAGE...: apt-get the packages (callers pass only the missing ones;
# needs root, as CI and these machines run)
debian_install() {
  [ $# -gt 0 ] || return 0
  echo "==> installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# venv_outdated VENV WANT: true while VENV does not hold WANT (its stamp says what it holds)
venv_outdated() {
  [ "$(cat "$1/.verbund-install" 2>/dev/null)" != "$2" ]
}

# venv_stamp VENV WANT: records that VENV now holds WANT
venv_stamp() {
  echo "$2" > "$1/.verbund-install"
}

# venv_create VENV MIN MAX PYVAR: makes VENV unless it exists, with the first of $PYVAR,
# $PYTHON, python3, python3.12, python3.11, python3.10 whose version is MIN or newer and
# older than MAX (e.g. 3.10 3.13: the versions the venv's packages have wheels for)
venv_create() {
  local venv=$1 min=$2 max=$3 var=$4 py
  [ ! -x "$venv/bin/python" ] || return 0
  for py in "${!var:-}" "${PYTHON:-}" python3 python3.12 python3.11 python3.10; do
    if [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 &&
      "$py" -c "import sys; sys.exit(not (${min/./, }) <= sys.version_info[:2] < (${max/./, }))"; then
      echo "==> creating $venv"
      "$py" -m venv "$venv"
      "$venv/bin/pip" install -q --upgrade pip
      return 0
    fi
  done
  echo "$(basename "$venv") needs Python $min or newer, older than $max; set $var to one." >&2
  return 1
}

# venv_install VENV WANT MIN MAX PYVAR: the common case, WANT (requirement specs)
# installed into VENV with one pip run
venv_install() {
  venv_outdated "$1" "$2" || return 0
  venv_create "$1" "$3" "$4" "$5"
  echo "==> installing $2 into $(basename "$1")"
  # shellcheck disable=SC2086 - WANT is a list of requirement specs
  "$1/bin/pip" install -q $2
  venv_stamp "$1" "$2"
}
