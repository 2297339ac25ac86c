# bash completion for vsymctl(1), the command-line tool of vsymfs.
# Commands and options come from the vsymctl being completed (its --help),
# so they always match that program; only what an option's value is (a
# file, a directory, a user) is known here.

# `vsymctl [SUB] --help` as CLI11 lays it out: two-space-indented lines
# under "Options:" and "Subcommands:". Prints the subcommands, or each
# option name with 1 when a value follows it (its help shows a type such as
# TEXT, INT or TEXT:NONNEGATIVE) and 0 for a flag.
_vsymctl_help() {
  local prog=$1 sub=$2 want=$3 line section= names rest type takes name
  while IFS= read -r line; do
    case $line in
      Options:) section=options; continue ;;
      Subcommands:) section=subcommands; continue ;;
      Positionals:) section=positionals; continue ;;
      "  "[!\ ]*) ;;
      "   "*) continue ;;
      *) section=; continue ;;
    esac
    [[ $section == "$want" ]] || continue
    read -r names rest <<<"$line"
    if [[ $want == subcommands ]]; then
      printf '%s\n' "$names"
      continue
    fi
    type=${rest%% *}
    takes=0
    [[ $type =~ ^[A-Z]+(:[^[:space:]]*[^:[:space:]])?$ ]] && takes=1
    for name in ${names//,/ }; do printf '%s %s\n' "$name" "$takes"; done
  done < <("$prog" ${sub:+"$sub"} --help 2>/dev/null)
}

_vsymctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev= prog=${COMP_WORDS[0]}
  ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
  COMPREPLY=()

  local -A opts=() subs=()
  local name takes i word sub= command_at=0
  while read -r name takes; do opts[$name]=$takes; done < <(_vsymctl_help "$prog" "" options)
  while read -r name; do subs[$name]=1; done < <(_vsymctl_help "$prog" "" subcommands)

  # The subcommand is the first word that is neither an option nor an
  # option's value; `run` takes the rest of the line as a command, from its
  # first positional word on (or after --).
  for ((i = 1; i < COMP_CWORD; i++)); do
    word=${COMP_WORDS[i]}
    if [[ $word == -- && $sub == run ]]; then
      command_at=$((i + 1))
      break
    elif [[ $word == -* ]]; then
      [[ $word != *=* && ${opts[$word]:-0} == 1 ]] && ((i++))
    elif [[ -z $sub && -n ${subs[$word]:-} ]]; then
      sub=$word
      # Its own options, and the global ones, which may follow it.
      while read -r name takes; do opts[$name]=$takes; done < <(_vsymctl_help "$prog" "$sub" options)
    elif [[ $sub == run ]]; then
      command_at=$i
      break
    fi
  done

  if ((command_at > 0)); then
    if declare -F _command_offset >/dev/null; then
      _command_offset "$command_at"
    elif ((COMP_CWORD == command_at)); then
      COMPREPLY=($(compgen -c -- "$cur"))
    else
      compopt -o filenames 2>/dev/null
      COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
  fi

  # The value of an option.
  if [[ $prev == -* && ${opts[$prev]:-0} == 1 ]]; then
    case $prev in
      -r|--rules|--socket) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
      -m|--mount|-p|--probe-root|--prefix) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")) ;;
      -u|--user|--as-user) COMPREPLY=($(compgen -u -- "$cur")) ;;
      -g|--gid) COMPREPLY=($(compgen -g -- "$cur")) ;;
      -e|--env) compopt -o nospace 2>/dev/null; COMPREPLY=($(compgen -e -S = -- "$cur")) ;;
    esac
    return 0
  fi

  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "${!opts[*]}" -- "$cur"))
  elif [[ -z $sub ]]; then
    COMPREPLY=($(compgen -W "${!subs[*]}" -- "$cur"))
  else
    case $sub in
      check|explain) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
      run) COMPREPLY=($(compgen -c -- "$cur")) ;;
    esac
  fi
  return 0
}

complete -F _vsymctl vsymctl
